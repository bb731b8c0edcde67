"""A loopback stand-in for the Hugging Face Hub: the few routes that `HfApi.create_repo` and `upload_folder`
(huggingface_hub's legacy single-commit path, taken with Xet disabled) call, each checking what it receives.

Routes (as huggingface_hub 2.4's hf_api.py, _commit_api.py and lfs.py call them):
- POST /api/repos/create: records the repository (and whether `visibility` is private); answers its URL. A name
  without owner goes to `OWNER`, as the Hub puts it in the token's user's namespace.
- POST /api/validate-yaml: the README's metadata must parse with `ModelCard` (400 with the error otherwise).
- POST /api/models/{owner}/{name}/preupload/{revision}: README.md uploads as a regular git file, the others as
  LFS objects (as the Hub does for binary weights).
- POST /{owner}/{name}.git/info/lfs/objects/batch: one upload and one verify action per object.
- PUT /lfs/{oid}: the body's SHA-256 must be the announced oid (400 otherwise); stores the bytes.
- POST /lfs-verify: the oid must have been stored with the announced size.
- POST /api/models/{owner}/{name}/commit/{revision}: the NDJSON commit; each `lfsFile` must name a stored
  object of its size, the README must load with `ModelCard.load`; the files are kept in `StandIn.repos`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from support import free_port, wait_for

OWNER = "stand-in-user"


@dataclass
class StandIn:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> file name -> content
    private: dict[str, bool] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # oid -> content
    calls: list[str] = field(default_factory=list)  # "METHOD path" in order
    tokens: set[str] = field(default_factory=set)  # the authorization headers seen on the API routes


def card_problem(content: str) -> str | None:
    """None when `content` loads with ModelCard.load (the way a reader of the repository would), else why not."""
    from huggingface_hub import ModelCard

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "README.md"
        path.write_text(content, encoding="utf-8")
        try:
            card = ModelCard.load(path)
        except Exception as error:  # anything the client cannot parse is the error we check for
            return f"{type(error).__name__}: {error}"
    return None if card.data.to_dict() else "the card has no metadata"


def make_app(state: StandIn) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next):
        state.calls.append(f"{request.method} {request.url.path}")
        if not request.url.path.startswith("/lfs/"):  # on the Hub, a presigned storage URL that takes no token
            state.tokens.add(request.headers.get("authorization", ""))
        return await call_next(request)

    @app.post("/api/repos/create")
    async def create(request: Request):
        body = await request.json()
        repo_id = f"{body.get('organization') or OWNER}/{body['name']}"
        if body.get("type", "model") != "model":
            raise HTTPException(400, "the stand-in holds model repositories only")
        state.repos.setdefault(repo_id, {})
        state.private[repo_id] = body.get("visibility") == "private"
        return {"url": f"{state.url}/{repo_id}", "name": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        problem = card_problem((await request.json())["content"])
        if problem:
            return Response(json.dumps({"errors": [{"message": problem}]}), status_code=400)
        return {"errors": [], "warnings": []}

    @app.post("/api/models/{owner}/{name}/preupload/{revision}")
    async def preupload(owner: str, name: str, revision: str, request: Request):
        files = (await request.json())["files"]
        return {"files": [{"path": f["path"], "uploadMode": "regular" if f["path"] == "README.md" else "lfs",
                           "shouldIgnore": False, "oid": None} for f in files]}

    @app.post("/{owner}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch(owner: str, name: str, request: Request):
        objects = (await request.json())["objects"]
        return {"transfer": "basic", "objects": [
            {"oid": o["oid"], "size": o["size"], "actions": {
                "upload": {"href": f"{state.url}/lfs/{o['oid']}"},
                "verify": {"href": f"{state.url}/lfs-verify"}}} for o in objects]}

    @app.put("/lfs/{oid}")
    async def lfs_put(oid: str, request: Request):
        content = await request.body()
        if hashlib.sha256(content).hexdigest() != oid:
            raise HTTPException(400, "the uploaded bytes do not hash to the announced oid")
        state.lfs[oid] = content
        return Response(status_code=200)

    @app.post("/lfs-verify")
    async def lfs_verify(request: Request):
        body = await request.json()
        if body["oid"] not in state.lfs or len(state.lfs[body["oid"]]) != body["size"]:
            raise HTTPException(404, "object not uploaded")
        return {}

    @app.post("/api/models/{owner}/{name}/commit/{revision}")
    async def commit(owner: str, name: str, revision: str, request: Request):
        repo_id = f"{owner}/{name}"
        if repo_id not in state.repos:
            raise HTTPException(404, "Repository not found")
        files = {}
        for line in (await request.body()).decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                content = state.lfs.get(value["oid"])
                if content is None or len(content) != value["size"]:
                    raise HTTPException(400, f"{value['path']}: LFS object {value['oid']} was not uploaded")
                files[value["path"]] = content
        problem = card_problem(files["README.md"].decode()) if "README.md" in files else "no README.md"
        if problem:
            raise HTTPException(400, f"README.md: {problem}")
        state.repos[repo_id].update(files)
        oid = hashlib.sha1(b"".join(files[path] for path in sorted(files))).hexdigest()
        return {"commitUrl": f"{state.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    return app


class Server:
    """The stand-in on a free loopback port, in a thread; `stop()` ends it."""

    def __init__(self) -> None:
        self.state = StandIn()
        port = free_port()
        self.state.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(make_app(self.state), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        if not wait_for(lambda: self.server.started, 30):
            raise RuntimeError("the Hub stand-in did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
