//! Reading job files from disk: a whole confdir, or `--check PATH…`.
