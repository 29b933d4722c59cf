"""A bare aiohttp server answering POST /predict with a constant: no framework, no model. Against it
the load generator measures its own ceiling on this machine (fixtures/measure/client_ceiling.py).

    python -m servers.bare --port 8000
"""

import argparse

from aiohttp import web

from servers.runtime import die_with_parent


async def predict(request):
    await request.read()
    return web.json_response({"output": {}})


async def health(request):
    return web.Response(text="ok")


def main(argv=None):
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    app = web.Application()
    app.router.add_post("/predict", predict)
    app.router.add_get("/health", health)
    # run_app installs its own SIGINT/SIGTERM handlers: both end it gracefully.
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
