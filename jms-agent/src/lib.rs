//! Placeholder: the session agent and jms-agentd arrive with the bastion-login and sessions issues.
