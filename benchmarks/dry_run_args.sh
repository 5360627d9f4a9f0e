# Sourced by the GPU scripts after their `cd` to the repo root: DRY=1 with `--dry-run` (or DRY_RUN=1);
# any other argument stops the script with one line, exit 2.
DRY="${DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) echo "$(basename "$0"): unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done
