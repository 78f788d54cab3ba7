# Sourced by the scripts that call pip. A pip configuration listing local indexes that hold
# only some packages (`pip config list -v` shows which files set extra-index-url) makes pip
# print "WARNING: Location '...' is ignored: it is neither a file nor a directory." once per
# package it looks up there: about 70 lines per install, none of them about a problem.
# Those lines are dropped; every other line, and pip's exit status, pass through. The
# configuration itself is kept: it may carry certificates or the machine's CPU torch build.
pip_quiet() {
  "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$" >&2)
}
