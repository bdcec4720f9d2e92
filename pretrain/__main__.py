"""`python -m pretrain [--config PATH] [dotted.key=value ...]`: same as pretrain_teacher.py."""

from clip_td.base.io import InputError

from pretrain.train import main

if __name__ == "__main__":
    import sys

    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
