# A cloud-config (YAML) subset to shell, for Atoll's tiny guest (busybox awk).
# Top-level keys understood: bootcmd, runcmd (items: strings, or lists of words),
# write_files (path, content incl. "|" blocks, permissions), hostname,
# ssh_authorized_keys. Others are ignored. Block style as PyYAML writes it.
function unquote(v) {
    sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
    if (v ~ /^'.*'$/) { v = substr(v, 2, length(v) - 2); gsub(/''/, "'", v) }
    else if (v ~ /^".*"$/) { v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v) }
    return v
}
function shq(v) { gsub(/'/, "'\\''", v); return "'" v "'" }
function flush_cmd() {
    if (cmd != "") { cmds[section] = cmds[section] cmd "\n"; cmd = "" }
}
function flush_file() {
    if (fpath != "") {
        files = files "mkdir -p \"$(dirname " shq(fpath) ")\"\nprintf '%s' " shq(fcontent) " > " shq(fpath) "\n"
        if (fperm != "") files = files "chmod " fperm " " shq(fpath) "\n"
    }
    fpath = ""; fcontent = ""; fperm = ""; inblock = 0
}
BEGIN { section = "" }
NR == 1 && /^#cloud-config/ { next }
{
    line = $0
    if (inblock) {
        match(line, /^ */)
        if (line == "" || RLENGTH >= blockindent) {
            fcontent = fcontent substr(line, blockindent + 1) "\n"; next
        }
        inblock = 0
        if (chomp) sub(/\n$/, "", fcontent)
    }
    if (line ~ /^[A-Za-z_]+:/) {
        flush_cmd(); if (section == "write_files") flush_file()
        key = line; sub(/:.*/, "", key); val = line; sub(/^[^:]*:/, "", val)
        section = key
        if (key == "hostname") hostname = unquote(val)
        next
    }
    if (section == "runcmd" || section == "bootcmd") {
        if (line ~ /^- - / || line ~ /^-   - /) { flush_cmd(); w = line; sub(/^- - /, "", w); cmd = shq(unquote(w)); next }
        if (line ~ /^  - /) { w = line; sub(/^  - /, "", w); cmd = cmd " " shq(unquote(w)); next }
        if (line ~ /^- /) { flush_cmd(); w = line; sub(/^- /, "", w); cmd = unquote(w); next }
    }
    if (section == "ssh_authorized_keys" && line ~ /^- /) {
        w = line; sub(/^- /, "", w); keys = keys unquote(w) "\n"; next
    }
    if (section == "write_files") {
        item = line
        if (item ~ /^- /) { flush_file(); sub(/^- /, "  ", item) }
        if (item ~ /^  [a-z_]+:/) {
            k = item; sub(/^  /, "", k); sub(/:.*/, "", k)
            v = item; sub(/^  [a-z_]+:[ ]?/, "", v)
            if (k == "path") fpath = unquote(v)
            else if (k == "permissions") fperm = unquote(v)
            else if (k == "content") {
                if (v ~ /^\|/) { inblock = 1; blockindent = 4; chomp = (v ~ /^\|-/); fcontent = "" }
                else fcontent = unquote(v) "\n"
            }
        }
    }
}
END {
    flush_cmd()
    if (section == "write_files") { if (inblock && chomp) sub(/\n$/, "", fcontent); flush_file() }
    if (hostname != "") print "hostname " shq(hostname)
    printf "%s", cmds["bootcmd"]
    printf "%s", files
    if (keys != "") print "mkdir -p /root/.ssh && printf '%s' " shq(keys) " > /root/.ssh/authorized_keys"
    printf "%s", cmds["runcmd"]
}
