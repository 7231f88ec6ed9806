#!/bin/sh
# Install Switchboard for this user, from the folder this script is in (the unpacked tarball):
# the program goes to ~/.local/lib/switchboard, the `switchboard` command to ~/.local/bin, the menu
# entry and icon to ~/.local/share. No administrator rights needed. PREFIX=/opt/... changes where.
#     ./install.sh             install (or update: the previous copy is replaced)
#     ./install.sh --uninstall remove the program, the command, the menu entry, the icon and the
#                              sign-in entry (Settings > Start Switchboard when I sign in)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${PREFIX:-"$HOME/.local"}
dest="$prefix/lib/switchboard"
share="$prefix/share"
entry="$share/applications/switchboard.desktop"
icon="$share/icons/hicolor/256x256/apps/switchboard.png"

if [ "${1:-}" = "--uninstall" ]; then
    rm -rf "$dest"
    rm -f "$prefix/bin/switchboard" "$entry" "$icon"
    # The sign-in entry the app's setting wrote, if it starts this copy.
    autostart="${XDG_CONFIG_HOME:-$HOME/.config}/autostart/switchboard.desktop"
    if [ -f "$autostart" ] && grep -qF "$dest/switchboard" "$autostart"; then
        rm -f "$autostart"
    fi
    echo "Switchboard removed from $dest. Your school's data stays where it was (see \`switchboard doctor\`)."
    exit 0
fi

if [ "$here" != "$dest" ]; then
    mkdir -p "$prefix/lib"
    rm -rf "$dest.new"
    cp -a "$here" "$dest.new"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
fi
mkdir -p "$prefix/bin" "$share/applications" "$(dirname "$icon")"
ln -sf "$dest/switchboard" "$prefix/bin/switchboard"
# The menu entry names the program by its full path, so it works without ~/.local/bin on PATH.
sed "s|^Exec=switchboard |Exec=\"$dest/switchboard\" |" "$dest/switchboard.desktop" > "$entry"
cp "$dest/switchboard.png" "$icon"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$share/applications" || true
echo "Switchboard $("$dest/switchboard" --version | cut -d' ' -f2) installed in $dest."
echo "Open it from the menu, or run: $prefix/bin/switchboard"
