"""`bonify-serve`: the HTTP API (FastAPI + uvicorn) over `serve.core.Predictor`.

Routes: `GET /healthz` (200 once the model is loaded, 503 before), `GET /model` (the model
card), `POST /predict` (multipart field `files`, repeatable, or the raw image bytes as the
body; `?gradcam=true` adds each overlay as base64 PNG). Unreadable files of a request are
listed in its `rejected` and left out of the study block; a request with no readable file is
a 422. Every error is a JSON `{"error": ...}` with a 4xx status naming the file and reason;
nothing answers with a stack trace.

Access: with a token (`--token_file FILE` or the BONIFY_API_TOKEN environment variable) every
route but /healthz needs `Authorization: Bearer <token>` (401 otherwise). Without one the
server only starts on a loopback address, or with an explicit `--no_auth` (for a server behind
an authenticating proxy): a server reachable from other machines is never open by accident.

Concurrent requests share the model: each request's decoded images go on one asyncio queue;
a single worker task takes what is waiting (up to batch_size images, waiting at most
max_wait_ms for more) and runs them through the model in one call, on one model thread, so
the event loop keeps accepting uploads and decoding them (in the default thread pool) while
the model works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# At module level: FastAPI reads the route's `request: Request` annotation (a string, with
# postponed annotations) from this module's globals.
from fastapi import Request

from bonify.cli import OneLineArgumentParser, run_command
from bonify.model_card import RESIZE_MODES
from bonify.tta import TTA_MODES
from serve.core import ImageAnswer, Rejection, ServeError, add_model_argument

PROG = "bonify-serve"

#: Where the CLI hands its checked options to the app factory (uvicorn imports the app by
#: name, so with --workers > 1 every worker process builds its own from this). It holds the
#: token's source (file or variable name), never the token.
CONFIG_ENV = "BONIFY_SERVE_CONFIG"

#: The API token, when it is not given as --token_file.
TOKEN_ENV = "BONIFY_API_TOKEN"

#: The one route that answers without the token (Kubernetes probes carry no credentials).
OPEN_PATHS = frozenset({"/healthz"})

#: A token shorter than this is refused (it could be guessed).
MIN_TOKEN_LENGTH = 16

DESCRIPTION = """\
Serve a trained bonify model over HTTP: POST radiographs (PNG, JPEG or DICOM) to /predict and
get, per image, the 14 class probabilities, body region, normal/abnormal, confidence and
top-3, plus the study verdict for several images of one study. GET /healthz, GET /model (the
model card). Concurrent requests are batched into the model.
Research use only; not a medical device."""

EXAMPLES = """\
# serve the demo's model on the loopback interface
bonify-serve --model demo_output/job
# then, from another shell: one image, and a study of two with Grad-CAM overlays
curl -s -F files=@a.png http://127.0.0.1:8000/predict
curl -s -F files=@a.png -F files=@b.png 'http://127.0.0.1:8000/predict?gradcam=true'
# raw bytes as the body work too
curl -s --data-binary @a.dcm -H 'Content-Type: application/dicom' \\
    'http://127.0.0.1:8000/predict?filename=a.dcm'
# on all interfaces (a token is then required), two processes, uploads up to 50 MB
openssl rand -hex 32 > api.token
bonify-serve --model job/model/final.keras --host 0.0.0.0 --token_file api.token --workers 2
curl -s -H "Authorization: Bearer $(cat api.token)" -F files=@a.png http://HOST:8000/predict"""

log = logging.getLogger("bonify.serve")

#: Model load failures of this process's app (the CLI exits non-zero after uvicorn stops).
LOAD_FAILURES: list[str] = []

#: The uvicorn server of a one-process bonify-serve (told to exit when the model will not load).
_SERVER = None


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """A checked command line (model paths as given; they were resolved once to check)."""

    models: tuple[str, ...]
    image_size: int | None = None
    resize: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_upload_mb: float = 20.0
    batch_size: int = 16
    max_wait_ms: float = 5.0
    tta: str = "none"
    token_file: str | None = None  # the token's file; None: BONIFY_API_TOKEN or no token
    no_auth: bool = False  # serve without a token (only when asked for with --no_auth)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


# ---- errors as JSON ---------------------------------------------------------------------


class ServeArgumentError(ServeError):
    """A bad flag of bonify-serve (or a bad token file or variable)."""


class ApiError(Exception):
    """An answer with a 4xx status and {"error": message, ...extra}."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _error_response(status: int, message: str, **extra):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, **extra}, status_code=status)


# ---- access -----------------------------------------------------------------------------


def read_token(options: ServeOptions) -> str | None:
    """The API token from options.token_file or BONIFY_API_TOKEN (None: none given).

    Surrounding white space (a file's trailing newline) is dropped. A ServeArgumentError
    (one line that never contains the token) for a missing, unreadable or empty file, a
    variable set but empty, both sources at once, or a token that is short or not printable
    ASCII without spaces."""
    from_env = os.environ.get(TOKEN_ENV)
    if options.token_file is not None and from_env is not None:
        raise ServeArgumentError(
            f"--token_file and {TOKEN_ENV} both give a token: use one of them (unset "
            f"{TOKEN_ENV}, or drop --token_file)"
        )
    if options.token_file is not None:
        where = f"--token_file {options.token_file}"
        try:
            with open(options.token_file, encoding="ascii") as file:
                token = file.read().strip()
        except FileNotFoundError:
            raise ServeArgumentError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise ServeArgumentError(f"{where}: is a folder, not a token file") from None
        except PermissionError:
            raise ServeArgumentError(f"{where}: cannot be read (permission denied)") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = "not ASCII text" if isinstance(error, UnicodeDecodeError) else error.strerror
            raise ServeArgumentError(f"{where}: cannot be read ({reason})") from None
    elif from_env is not None:
        where, token = TOKEN_ENV, from_env.strip()
    else:
        return None
    if not token:
        raise ServeArgumentError(f"{where}: the token is empty")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ServeArgumentError(f"{where}: the token must be printable ASCII without spaces")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ServeArgumentError(
            f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters "
            "(make one with: openssl rand -hex 32)"
        )
    return token


def check_access(options: ServeOptions) -> None:
    """Refuse (ServeArgumentError) a bad token, a token with --no_auth, and a server that
    would listen beyond this machine without a token unless --no_auth says so."""
    token = read_token(options)
    if token is not None and options.no_auth:
        source = "--token_file" if options.token_file is not None else TOKEN_ENV
        raise ServeArgumentError(f"--no_auth and {source} contradict each other: drop one")
    if token is None and not options.no_auth and not is_loopback(options.host):
        raise ServeArgumentError(
            f"--host {options.host} without a token would answer anyone who reaches it: give "
            f"--token_file FILE (or set {TOKEN_ENV}), or --no_auth if an authenticating proxy "
            "stands in front"
        )


def is_loopback(host: str) -> bool:
    """Whether --host only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BearerTokenAuth:
    """ASGI middleware: every HTTP request but OPEN_PATHS needs `Authorization: Bearer
    <token>`, else 401 JSON with a WWW-Authenticate header, before its body is read. The
    token is compared in constant time and never written anywhere."""

    def __init__(self, app, token: str):
        self.app = app
        self._token = token.encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = bearer_credentials(dict(scope["headers"]).get(b"authorization"))
        if given is not None and hmac.compare_digest(given, self._token):
            return await self.app(scope, receive, send)
        from fastapi.responses import JSONResponse

        if given is None:
            message = "missing token: send the header 'Authorization: Bearer <token>'"
            challenge = 'Bearer realm="bonify"'
        else:
            message = "wrong token"
            challenge = 'Bearer realm="bonify", error="invalid_token"'
        response = JSONResponse(
            {"error": message}, status_code=401, headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)


def bearer_credentials(header: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header value (None: no such header
    or another scheme)."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None
    return credentials.strip()


# ---- micro-batching ---------------------------------------------------------------------


class MicroBatcher:
    """Runs the model on images of concurrent requests together.

    `predict(images)` queues one request's model inputs and waits for their probabilities;
    one worker task drains the queue into batches of up to batch_size images (a request
    larger than that is one batch of its own; the predictor splits it), waiting at most
    max_wait_s for a batch to fill once the first request is there.
    """

    def __init__(self, predict_arrays, executor, batch_size: int, max_wait_s: float):
        self.predict_arrays = predict_arrays
        self.executor = executor
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0  # model calls made (tests read it to see batching happen)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def predict(self, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def _collect(self) -> list:
        jobs = [await self.queue.get()]
        count = len(jobs[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while count < self.batch_size:
            try:
                if self.queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                else:
                    job = self.queue.get_nowait()
            except (TimeoutError, asyncio.TimeoutError):
                break
            if count + len(job[0]) > self.batch_size:
                # Too big to join: first in line next time.
                await self._requeue_front(job)
                break
            jobs.append(job)
            count += len(job[0])
        return jobs

    async def _requeue_front(self, job) -> None:
        waiting = [job]
        while not self.queue.empty():
            waiting.append(self.queue.get_nowait())
        for item in waiting:
            self.queue.put_nowait(item)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            images = np.concatenate([job[0] for job in jobs])
            try:
                probs = await loop.run_in_executor(self.executor, self.predict_arrays, images)
            except Exception as error:  # the model failed: every waiting request learns it
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for batch_images, future in jobs:
                if not future.done():
                    future.set_result(probs[start : start + len(batch_images)])
                start += len(batch_images)


# ---- the app ----------------------------------------------------------------------------


def _parse_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(400, f"?{name}={value}: must be true or false")


async def _read_body(request, limit: int) -> bytes:
    """The whole request body, or a 413 as soon as it passes `limit` bytes (the declared
    Content-Length is checked first, so an oversize upload is refused unread)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, _too_large(int(declared), limit))
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, _too_large(total, limit, at_least=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"upload of {more}{size / 1e6:.1f} MB is over the limit of {limit / 1e6:.1f} MB "
        "(bonify-serve --max_upload_mb)"
    )


async def _uploads(request, limit: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every uploaded image: multipart field `files` (repeatable), or
    the body itself named by ?filename= (default "upload")."""
    body = await _read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # The body is read (and bounded) already; the form parser reads it from here.
        request._body = body
        try:
            form = await request.form(max_files=1000, max_fields=1000)
        except Exception as error:  # malformed multipart: a client mistake
            raise ApiError(400, f"malformed multipart body ({error})") from None
        uploads = []
        for index, item in enumerate(form.getlist("files")):
            if isinstance(item, str):
                raise ApiError(400, f"form field 'files' #{index + 1} is text, not a file upload")
            uploads.append((item.filename or f"file{index + 1}", await item.read()))
        if not uploads:
            fields = ", ".join(sorted(set(form.keys()))) or "none"
            raise ApiError(400, f"no file in form field 'files' (fields sent: {fields})")
        return uploads
    if not body:
        raise ApiError(
            400,
            "no image: send multipart form field 'files' (repeatable) or the image bytes as "
            "the request body",
        )
    return [(request.query_params.get("filename") or "upload", body)]


def _rejection_error(rejections: Sequence[Rejection]):
    """The 422 of a request none of whose files is readable, naming each."""
    message = "; ".join(f"{item.name}: {item.reason} ({item.detail})" for item in rejections)
    if len(rejections) > 1:
        message = f"no readable image in {len(rejections)} files: {message}"
    return ApiError(422, message, rejected=[item.to_json() for item in rejections])


def _answer_json(answer: ImageAnswer) -> dict:
    data = answer.to_json()
    if answer.overlay_png is not None:
        data["gradcam_png"] = base64.b64encode(answer.overlay_png).decode("ascii")
    return data


class ServeState:
    """What the routes share: the predictor (None while loading) and its batcher."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.predictor = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        # One thread runs every model call (Keras models are not made for concurrent calls).
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")


def create_app(options: ServeOptions, predictor=None):
    """The FastAPI app. predictor: an already loaded serve.core.Predictor (tests), else the
    models of `options` are loaded in the background at start-up (/healthz says 503 until
    then)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    token = read_token(options)
    state = ServeState(options)

    def ready(loaded) -> None:
        state.predictor = loaded
        state.batcher = MicroBatcher(
            lambda images: loaded.predict_arrays(images, options.tta),
            state.model_thread,
            options.batch_size,
            options.max_wait_ms / 1000.0,
        )
        state.batcher.start()

    async def load_in_background() -> None:
        from serve.core import Predictor

        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(
                state.model_thread,
                lambda: Predictor.load(
                    options.models, options.image_size, options.resize, options.batch_size
                ),
            )
        except Exception as error:
            state.load_error = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"{PROG}: error: {state.load_error}", file=sys.stderr, flush=True)
            LOAD_FAILURES.append(state.load_error)
            # A server that cannot load its model must not look alive: stop it.
            if _SERVER is not None:
                _SERVER.should_exit = True
            else:  # a worker process of `--workers N`
                os.kill(os.getpid(), signal.SIGTERM)
            return
        ready(loaded)
        print(f"{PROG}: model loaded ({', '.join(loaded.model_files)})", file=sys.stderr)

    @asynccontextmanager
    async def lifespan(_app):
        loader = None
        if predictor is not None:
            ready(predictor)
        else:
            loader = asyncio.get_running_loop().create_task(load_in_background())
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            if state.batcher is not None:
                await state.batcher.stop()
            state.model_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="bonify",
        description="MURA radiograph classification. Research use only; not a medical device.",
        lifespan=lifespan,
    )
    app.state.serve = state
    if token is not None:
        app.add_middleware(BearerTokenAuth, token=token)

    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        return _error_response(error.status, error.message, **error.extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        message = str(error.detail) if error.status_code != 404 else f"no route {request.url.path}"
        return _error_response(error.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg')}"
            for item in error.errors()
        )
        return _error_response(422, problems or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected_error(request, error):
        # Logged here with its traceback; the client gets one line, never the trace.
        log.exception("%s %s failed", request.method, request.url.path)
        return _error_response(500, f"internal error ({type(error).__name__}); see server log")

    def require_model():
        if state.predictor is None:
            raise ApiError(503, state.load_error or "the model is still loading")
        return state.predictor

    @app.get("/healthz")
    async def healthz():
        if state.predictor is None:
            return _error_response(503, state.load_error or "the model is still loading")
        return {"status": "ok", "models": len(state.predictor.model_files)}

    @app.get("/model")
    async def model_card():
        return require_model().card_json()

    @app.post("/predict")
    async def predict(request: Request):
        loaded = require_model()
        gradcam = _parse_bool("gradcam", request.query_params.get("gradcam"))
        uploads = await _uploads(request, options.max_upload_bytes)
        decoded = await asyncio.gather(
            *(asyncio.to_thread(loaded.decode, data, name) for name, data in uploads)
        )
        rejections = [item for item in decoded if isinstance(item, Rejection)]
        readable = [item for item in decoded if not isinstance(item, Rejection)]
        if not readable:
            raise _rejection_error(rejections)
        images = np.stack([item.model_input for item in readable])[..., np.newaxis]
        probs = await state.batcher.predict(images)
        if gradcam:
            answers = await asyncio.get_running_loop().run_in_executor(
                state.model_thread,
                lambda: loaded.answer_decoded(readable, gradcam=True, probs=probs),
            )
        else:
            answers = loaded.answer_decoded(readable, probs=probs)
        result = {
            "threshold": loaded.threshold,
            "images": [_answer_json(answer) for answer in answers],
            # The app answers the readable files of an upload too; the study block below
            # says how many files it leaves out.
            "rejected": [item.to_json() for item in rejections],
        }
        if len(decoded) > 1:
            result["study"] = loaded.study([*answers, *rejections])
        # Plain JSON of plain values: skips FastAPI's generic encoder (~0.3 ms a request).
        return JSONResponse(result)

    return app


def app_from_env():
    """The app uvicorn builds in each worker process (factory), from CONFIG_ENV."""
    raw = json.loads(os.environ[CONFIG_ENV])
    raw["models"] = tuple(raw["models"])
    return create_app(ServeOptions(**raw))


# ---- the command line -------------------------------------------------------------------


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=DESCRIPTION, examples=EXAMPLES)
    add_model_argument(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on; any but a loopback one needs a token or --no_auth",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (each loads the model)"
    )
    parser.add_argument(
        "--max_upload_mb", type=float, default=20.0, help="largest request body (413 above)"
    )
    parser.add_argument(
        "--batch_size", type=int, default=16, help="most images per model call across requests"
    )
    parser.add_argument(
        "--max_wait_ms",
        type=float,
        default=5.0,
        help="how long a model call waits for more concurrent images",
    )
    parser.add_argument(
        "--tta", choices=TTA_MODES, default="none", help="flip: average with the mirror image"
    )
    parser.add_argument(
        "--image_size", type=int, help="only for a model without a card: its input size"
    )
    parser.add_argument(
        "--resize", choices=RESIZE_MODES, help="only for a model without a card: pad|stretch"
    )
    parser.add_argument(
        "--token_file",
        help=f"file holding the API token (else the {TOKEN_ENV} variable): every route but "
        "/healthz then needs 'Authorization: Bearer <token>'",
    )
    parser.add_argument(
        "--no_auth",
        action="store_true",
        help="serve without a token on a non-loopback --host (only behind your own "
        "authenticating proxy)",
    )
    return parser


def check_arguments(argv: Sequence[str] | None) -> ServeOptions:
    """Every user error as a one-line BonifyError, before TensorFlow is imported."""
    from serve.core import check_model_paths

    arguments = build_parser().parse_args(argv)
    if not 0 < arguments.port < 65536:
        raise ServeArgumentError(f"--port must be 1..65535, got {arguments.port}")
    if arguments.workers < 1:
        raise ServeArgumentError(f"--workers must be at least 1, got {arguments.workers}")
    if not arguments.max_upload_mb > 0:
        raise ServeArgumentError(f"--max_upload_mb must be positive, got {arguments.max_upload_mb}")
    if arguments.batch_size < 1:
        raise ServeArgumentError(f"--batch_size must be at least 1, got {arguments.batch_size}")
    if arguments.max_wait_ms < 0:
        raise ServeArgumentError(f"--max_wait_ms must be >= 0, got {arguments.max_wait_ms}")
    check_model_paths(arguments.model, arguments.image_size, arguments.resize)
    options = ServeOptions(
        models=tuple(arguments.model),
        image_size=arguments.image_size,
        resize=arguments.resize,
        host=arguments.host,
        port=arguments.port,
        workers=arguments.workers,
        max_upload_mb=arguments.max_upload_mb,
        batch_size=arguments.batch_size,
        max_wait_ms=arguments.max_wait_ms,
        tta=arguments.tta,
        token_file=arguments.token_file,
        no_auth=arguments.no_auth,
    )
    check_access(options)
    return options


def _run(argv: Sequence[str] | None) -> int:
    import uvicorn

    options = check_arguments(argv)  # every user error before TensorFlow is imported
    os.environ[CONFIG_ENV] = json.dumps(dataclasses.asdict(options))
    if options.no_auth:
        access = "no token (--no_auth): every route is open to whoever reaches the port"
    elif options.token_file is not None or TOKEN_ENV in os.environ:
        access = "every route but /healthz needs the bearer token"
    else:
        access = "no token: open to every process on this machine (loopback only)"
    print(
        f"{PROG}: loading {', '.join(options.models)}; serving on "
        f"http://{options.host}:{options.port} (GET /healthz is 200 once the model is loaded); "
        f"{access}",
        file=sys.stderr,
        flush=True,
    )
    if options.workers > 1:
        uvicorn.run(
            "serve.api:app_from_env",
            factory=True,
            host=options.host,
            port=options.port,
            workers=options.workers,
            log_level="info",
        )
    else:
        global _SERVER
        config = uvicorn.Config(
            "serve.api:app_from_env",
            factory=True,
            host=options.host,
            port=options.port,
            log_level="info",
        )
        _SERVER = uvicorn.Server(config)
        _SERVER.run()
    return 1 if LOAD_FAILURES else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run bonify-serve with `argv` (default: sys.argv[1:]); returns the exit code."""
    return run_command(PROG, _run, argv)


def console_main() -> None:
    """Entry point of the `bonify-serve` console script."""
    sys.exit(main())


if __name__ == "__main__":
    # Through the imported module, not __main__: uvicorn imports serve.api for the app, and
    # the module state (_SERVER, LOAD_FAILURES) must be the one the app sees.
    from serve.api import console_main as imported_console_main

    imported_console_main()
