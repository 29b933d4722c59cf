"""make install's installer (fixtures/setup/installer.py): uv with the machine's pip settings, else pip."""

from fixtures.setup.installer import install_command, pip_settings, uv_options

CONFIG = """:env:.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.index-url='https://mirror.example/simple'
"""


def test_every_pip_setting_becomes_its_uv_option_and_pip_picks_across_indexes():
    options = uv_options(pip_settings(CONFIG), ["-e", "."])
    assert options == ["--index-strategy", "unsafe-best-match", "--find-links", "/opt/wheels",
                       "--constraint", "/etc/xdg/pip/constraints.txt", "--extra-index-url", "file:///opt/pypi/simple",
                       "--extra-index-url", "file:///opt/pypi-more/simple", "--index-url", "https://mirror.example/simple"]


def test_an_index_url_on_the_command_line_replaces_the_configured_one():
    options = uv_options(pip_settings(CONFIG), ["--index-url", "https://download.pytorch.org/whl/cu128", "torch"])
    assert "https://mirror.example/simple" not in options and options.count("--extra-index-url") == 2


def test_a_setting_uv_cannot_follow_means_pip_as_does_a_venv_without_uv(tmp_path):
    assert uv_options(pip_settings("global.only-binary=':all:'"), ["torch"]) is None
    python = tmp_path / "bin" / "python"  # no uv beside it
    assert install_command(str(python), ["-e", "."]) == [str(python), "-m", "pip", "install", "--no-compile", "-e", "."]
