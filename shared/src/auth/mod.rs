//! Authentication (issue 4).
