"""Both services of the microservices demo in one process, start to finish.

    python examples/microservices/run.py

In production, api.py and worker.py are separate services (separate deployments, possibly
different languages of dependencies) that share only the database and contracts.py. Here a worker
engine runs on background threads while the API functions run on the main thread.
"""

from __future__ import annotations

import api
import worker


def main() -> None:
    engine = worker.build_engine().start()  # the worker service
    try:
        api.main()  # the API service
    finally:
        engine.stop()
        if worker._client is not None:
            worker._client.close()
    print("demo finished")


if __name__ == "__main__":
    main()
