//! Board code.
