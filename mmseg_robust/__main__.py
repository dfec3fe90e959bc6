"""Allow ``python -m mmseg_robust`` as an alias of the ``mmrobust`` console script."""

from mmseg_robust.cli import main

if __name__ == "__main__":
    main()
