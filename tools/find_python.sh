# Sourced by tools/dist_train.sh, dist_test.sh, slurm_train.sh and
# slurm_test.sh: sets PY, the Python that runs the job, so that they work
# without an activated environment. In order:
#   $PY, if set;
#   the activated virtual environment's ($VIRTUAL_ENV/bin/python);
#   the repository's virtual environment, $VENV/bin/python ($VENV: .venv by
#     default, relative to the repository root), as `make` runs it;
#   python3, else python, on PATH.
# `cd -P` resolves the mmpsearch/.mim/tools link of `mim` to the repository.
_mmps_repo=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PY:-}" ]; then
  _mmps_venv=${VENV:-.venv}
  case "$_mmps_venv" in
    /*) ;;
    *) _mmps_venv="$_mmps_repo/$_mmps_venv" ;;
  esac
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    PY="$VIRTUAL_ENV/bin/python"
  elif [ -x "$_mmps_venv/bin/python" ]; then
    PY="$_mmps_venv/bin/python"
  else
    PY=$(command -v python3 || command -v python || echo python3)
  fi
fi
unset _mmps_repo _mmps_venv
