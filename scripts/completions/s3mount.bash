# bash completion for s3mount (installed as /usr/share/bash-completion/completions/s3mount).
# Written by hand from `s3mount --help`; Tests/integration/test_completions.py checks that every
# option of --help is here.

_s3mount_profiles() {
    local f
    for f in "${AWS_SHARED_CREDENTIALS_FILE:-$HOME/.aws/credentials}" "${AWS_CONFIG_FILE:-$HOME/.aws/config}"; do
        [ -r "$f" ] && sed -n 's/^[[:space:]]*\[\(profile[[:space:]]\+\)\{0,1\}\([^]]*\)\].*/\2/p' "$f"
    done 2>/dev/null | sort -u
}

_s3mount() {
    local cur prev words cword split
    _init_completion -s || return

    local opts="--endpoint-url --region --force-path-style --profile --no-sign-request --prefix
        --read-only --uid --gid --file-mode --dir-mode --allow-other --allow-root --metadata
        --metadata-ttl --log-file --spool-dir --credentials-file --no-upload-checksums
        --stall-timeout --read-retry-time --write-retry-time --no-guess-content-type --cache
        --max-cache-size --read-part-size --read-concurrency --max-read-memory --walk-read-ahead
        --read-ahead --metrics-address --debug --foreground -o --help --version"
    local fstab="ro allow_other allow_root uid= gid= file_mode= dir_mode= endpoint_url= region=
        profile= prefix= force_path_style no_sign_request no_upload_checksums no_guess_content_type
        stall_timeout= read_retry_time= write_retry_time= metadata_ttl= metadata= debug foreground
        log_file= spool_dir= metrics_address= credentials_file= read_ahead= cache= max_cache_size=
        read_part_size= read_concurrency= max_read_memory= walk_read_ahead= _netdev nofail noauto
        x-systemd.automount"

    # `s3mount stats MOUNTPOINT`
    if [ "$cword" -ge 2 ] && [ "${words[1]}" = stats ]; then
        [ "$cword" -eq 2 ] && _filedir -d
        return
    fi

    case $prev in
        --log-file|--credentials-file) _filedir; return ;;
        --spool-dir|--cache) _filedir -d; return ;;
        --metadata) COMPREPLY=($(compgen -W "index head none" -- "$cur")); return ;;
        --metadata-ttl) COMPREPLY=($(compgen -W "0 60 indefinite" -- "$cur")); return ;;
        --profile) COMPREPLY=($(compgen -W "$(_s3mount_profiles)" -- "$cur")); return ;;
        --uid) COMPREPLY=($(compgen -u -- "$cur")); return ;;
        --gid) COMPREPLY=($(compgen -g -- "$cur")); return ;;
        -o)
            # A comma-separated list: complete the item after the last comma.
            local head="" item="$cur"
            if [[ $cur == *,* ]]; then head="${cur%,*},"; item="${cur##*,}"; fi
            COMPREPLY=($(compgen -P "$head" -W "$fstab" -- "$item"))
            compopt -o nospace
            return ;;
        --endpoint-url|--region|--prefix|--file-mode|--dir-mode|--stall-timeout|--read-retry-time|\
        --write-retry-time|--max-cache-size|--read-part-size|--read-concurrency|--max-read-memory|\
        --walk-read-ahead|--read-ahead|--metrics-address)
            return ;;  # a value of the user's own
    esac
    $split && return

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi

    # Positional arguments: the bucket (nothing to offer but `stats`), then the mount point.
    local i n=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -o|--endpoint-url|--region|--profile|--prefix|--uid|--gid|--file-mode|--dir-mode|--metadata|\
            --metadata-ttl|--log-file|--spool-dir|--credentials-file|--stall-timeout|--read-retry-time|\
            --write-retry-time|--cache|--max-cache-size|--read-part-size|--read-concurrency|\
            --max-read-memory|--walk-read-ahead|--read-ahead|--metrics-address)
                ((i++)) ;;
            -*) ;;
            *) ((n++)) ;;
        esac
    done
    if [ "$n" -eq 0 ]; then
        [ "$cword" -eq 1 ] && COMPREPLY=($(compgen -W "stats" -- "$cur"))
    elif [ "$n" -eq 1 ]; then
        _filedir -d
    fi
} &&
    complete -F _s3mount s3mount
