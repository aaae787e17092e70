#!/usr/bin/env bash
# Mutation testing of vissl_neg/negatives/ and vissl_neg/losses/ against their fast unit tests,
# with mutmut (pinned below, installed into build/mutation/deps, not into the environment).
# Not part of the test suite: about 2,300 mutants, an hour or more on 2 cores; it runs at the
# lowest CPU priority. Prints the score and the surviving mutants. One mutant's diff:
#   cd build/mutation/tree && python -c "import sys; sys.path.append('../deps'); \
#     from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()" show NAME
#
#   bash tools/mutation.sh                          # every mutant
#   bash tools/mutation.sh "vissl_neg.losses*"      # some, by mutmut's name pattern
#   MUTATION_JOBS=1 MUTATION_DIR=/tmp/m bash tools/mutation.sh   # one process, another folder
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
MUTMUT="mutmut==3.8.1"
work="${MUTATION_DIR:-$root/build/mutation}"
deps="$work/deps"
stamp="$deps/.installed-$MUTMUT"
if [ ! -f "$stamp" ]; then
  rm -rf "$deps"
  python -m pip install -q --target "$deps" "$MUTMUT"
  touch "$stamp"
fi
# mutmut writes its mutants under mutants/ of the folder it runs in and reads [mutmut] from
# setup.cfg there: a scratch copy of the package and its tests
tree="$work/tree"
rm -rf "$tree"
mkdir -p "$tree"
cp -r "$root/vissl_neg" "$root/tests" "$root/benchmarks" "$root/configs" "$root/pyproject.toml" "$tree/"
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
cat >"$tree/setup.cfg" <<'CFG'
[mutmut]
source_paths = vissl_neg
only_mutate =
    vissl_neg/negatives/*
    vissl_neg/losses/*
also_copy =
    benchmarks
    configs
# one process per mutant, pytest-xdist off (the package's addopts ask for -n auto)
pytest_add_cli_args =
    -n
    0
    -p
    no:cacheprovider
pytest_add_cli_args_test_selection =
    tests/test_ambiguous.py
    tests/test_batch_source.py
    tests/test_debiased.py
    tests/test_false_negatives.py
    tests/test_feature_transform.py
    tests/test_filtering.py
    tests/test_functional.py
    tests/test_geodesic.py
    tests/test_losses.py
    tests/test_memory_bank.py
    tests/test_mochi.py
    tests/test_negatives_losses_contracts.py
    tests/test_queue.py
    tests/test_sampler_distributions.py
CFG
# mutmut's own dependencies go after the environment's (its pytest must not shadow the project's)
mutmut() {
  (cd "$tree" && env -u PYTHONPATH nice -n 19 python -c \
    "import sys; sys.path.append('$deps'); from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()" "$@")
}
mutmut run --max-children "${MUTATION_JOBS:-2}" "$@"
mutmut results --all false
