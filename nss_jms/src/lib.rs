//! Placeholder: filled in by the bastion-login issue.
