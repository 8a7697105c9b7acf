"""``python -m ecg_lab.edge generate|classify --export DIR ...``: the edge runtime's command line."""

from ecg_lab.edge.runtime import main

if __name__ == "__main__":
    main()
