"""`gridgen serve`: a Flask app that serves every grid under a root folder.

`create_app` (in `app.py`) builds one app per root; every piece of state lives on that app
(`app.extensions["gridgen_viewer"]`, see `state.py`). The modules, one job each:

- `catalog`    finding grids under the root, reading their summaries, safe paths inside the root
- `security`   the checks every request passes: token, host, raw-URL traversal, origin
- `grids`      blueprint: the index page, each grid's explorer page and its files
- `live`       blueprint: Server-Sent Events fed by a grid's journal.jsonl
- `favourites` blueprint: starred cells (JSON API, page, zip download)
- `runs`       blueprint: queueing grid specs from the browser (only with allow_runs)
- `specs`      validating a spec submitted through the browser (size, includes, model/image paths)
- `worker`     the one thread that renders queued grids in order
- `db`         the SQLite file under the root: favourites and the run queue
- `server`     binding rules and the blocking `serve` the CLI calls
"""

from __future__ import annotations

from gridgen.viewer.app import create_app

__all__ = ["create_app"]
