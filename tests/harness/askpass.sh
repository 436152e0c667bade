#!/bin/sh
# SSH_ASKPASS helper for keyboard-interactive logins with several prompts
# (ssh runs it with SSH_ASKPASS_REQUIRE=force, once per prompt, the prompt
# text as $1). Answers from the environment and logs every prompt, so a
# test can check which prompts the server sent:
#   JMS_E2E_PROMPT_LOG  file that receives one line per prompt
#   JMS_E2E_PASSWORD    answer to a prompt containing "assword"
#   JMS_E2E_CODE        answer to a prompt containing "Verification code"
printf '%s\n' "$1" >>"$JMS_E2E_PROMPT_LOG"
case "$1" in
*"Verification code"*) printf '%s\n' "${JMS_E2E_CODE-}" ;;
*assword*) printf '%s\n' "${JMS_E2E_PASSWORD-}" ;;
*) exit 1 ;;
esac
