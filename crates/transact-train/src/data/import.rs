//! Importers for real logs.
