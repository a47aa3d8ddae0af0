//! The `vitae` host tool as a library: everything the CLI does, testable without a process.
