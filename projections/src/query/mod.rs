//! Read-model queries: what the analysts' and staff's read routes answer.
