//! Per-stanza tests of the parser.
