# bash completion for chutectl: commands, subcommands, options and their fixed values.
#
# Install: copy to /usr/share/bash-completion/completions/chutectl (bash-completion loads it
# on first use), or `source` it from ~/.bashrc. It needs nothing but bash itself.

_chutectl_words() {
  # The options of "GROUP VERB" (or of a cmdlet), one line each.
  case "$1" in
    "tenant add") echo "--domain" ;;
    "tenant set") echo "--basic-auth --oauth-issuer --oauth-audience --oauth-tenant-id
      --oauth-jwks --oauth-app-access --add-domain --remove-domain --password-min-length
      --password-complexity --password-history --notification-address" ;;
    "tenant remove") echo "--force --yes" ;;
    "account new") echo "--tenant --name --primary-smtp-address --password-stdin --no-password
      --no-mailbox-check" ;;
    "account list") echo "--tenant" ;;
    "account set") echo "--display-name --primary-smtp-address --add-alias --remove-alias --basic-auth
      --no-mailbox-check" ;;
    "account password") echo "--password-stdin" ;;
    "account remove") echo "--yes" ;;
    "settings set") echo "--reply-to" ;;
    "app-access add" | "app-access remove") echo "--app-id" ;;
    "report "*) echo "--tenant --account --days --from --to --volume --csv" ;;
    "queue retry") echo "--all" ;;
    New-MailUser*) echo "-HVEAccount -Name -PrimarySmtpAddress -PasswordStdin -NoPassword" ;;
    Get-MailUser*) echo "-HVEAccount -Identity" ;;
    Set-MailUser*) echo "-HVEAccount -Identity -DisplayName -PrimarySmtpAddress" ;;
    Remove-MailUser*) echo "-Identity -Confirm:\$false" ;;
    Get-HVEAccountSettings*) echo "-Identity" ;;
    Set-HVEAccountSettings*) echo "-Identity -ReplyTo" ;;
    Add-HVEAppAccess* | Remove-HVEAppAccess*) echo "-Identity -AppId" ;;
  esac
}

_chutectl() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local prev="${COMP_WORDS[COMP_CWORD-1]}"
  COMPREPLY=()

  # Values of options that take a fixed set, or a file.
  case "$prev" in
    --config)
      COMPREPLY=($(compgen -f -- "$cur"))
      return 0 ;;
    --oauth-jwks)
      COMPREPLY=($(compgen -W "discovery" -- "$cur") $(compgen -f -- "$cur"))
      return 0 ;;
    --basic-auth) COMPREPLY=($(compgen -W "on off" -- "$cur")); return 0 ;;
    --oauth-app-access) COMPREPLY=($(compgen -W "any listed" -- "$cur")); return 0 ;;
    --password-complexity) COMPREPLY=($(compgen -W "none 3-of-4" -- "$cur")); return 0 ;;
    --days) COMPREPLY=($(compgen -W "7 30 90" -- "$cur")); return 0 ;;
    --volume) COMPREPLY=($(compgen -W "recipients messages" -- "$cur")); return 0 ;;
  esac

  # The command word: the first one after the global options.
  local i=1 group=""
  while [ "$i" -lt "$COMP_CWORD" ]; do
    case "${COMP_WORDS[i]}" in
      --config) i=$((i + 2)) ;;
      --json | --config=*) i=$((i + 1)) ;;
      *) group="${COMP_WORDS[i]}"; break ;;
    esac
  done

  if [ -z "$group" ]; then
    local commands="tenant account settings app-access report queue mailq postqueue postsuper
      New-MailUser Get-MailUser Set-MailUser Remove-MailUser Get-HVEAccountSettings
      Set-HVEAccountSettings Add-HVEAppAccess Remove-HVEAppAccess"
    case "$cur" in
      -*) COMPREPLY=($(compgen -W "--config --json --help" -- "$cur")) ;;
      *) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
    esac
    return 0
  fi

  local verb=""
  if [ $((i + 1)) -lt "$COMP_CWORD" ]; then
    verb="${COMP_WORDS[i+1]}"
  fi
  if [ $((i + 1)) -eq "$COMP_CWORD" ]; then
    case "$group" in
      tenant) COMPREPLY=($(compgen -W "add list show set remove" -- "$cur")) ;;
      account) COMPREPLY=($(compgen -W "new list show set disable enable password remove" -- "$cur")) ;;
      settings) COMPREPLY=($(compgen -W "get set" -- "$cur")) ;;
      app-access) COMPREPLY=($(compgen -W "add remove" -- "$cur")) ;;
      queue) COMPREPLY=($(compgen -W "list show retry hold release delete dead requeue" \
        -- "$cur")) ;;
      report) COMPREPLY=($(compgen -W "$(_chutectl_words "report ")" -- "$cur")) ;;
      *-*) COMPREPLY=($(compgen -W "$(_chutectl_words "$group")" -- "$cur")) ;;
    esac
    return 0
  fi
  case "$cur" in
    -*) COMPREPLY=($(compgen -W "$(_chutectl_words "$group $verb") --json --config --help" \
      -- "$cur")) ;;
  esac
  return 0
}

complete -F _chutectl chutectl
