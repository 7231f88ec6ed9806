#!/usr/bin/env bash
# Build the Linux bundle (PyInstaller, one folder) into dist/switchboard and pack it, with its menu
# entry, icon and a per-user install script, as dist/switchboard-<version>-linux-<arch>.tar.gz.
# Prints the bundle's size unpacked and as a tarball. Run from anywhere:
#     packaging/linux/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' app/__init__.py)
if [ -z "$version" ]; then
    echo "build: cannot read __version__ from app/__init__.py" >&2
    exit 1
fi
arch=$(uname -m)
tarball="dist/switchboard-${version}-linux-${arch}.tar.gz"

uv run python packaging/icons.py build/icons
uv run pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/switchboard.spec

# The tarball holds one folder, switchboard/: the program and its _internal/ folder, the menu
# entry, the icon and install.sh (copies the folder to ~/.local/lib and adds the menu entry).
cp packaging/linux/switchboard.desktop packaging/linux/install.sh build/icons/switchboard.png \
    build/icons/switchboard.svg dist/switchboard/
chmod +x dist/switchboard/install.sh
rm -f "$tarball"
tar -C dist -czf "$tarball" switchboard

megabytes() { awk -v bytes="$1" 'BEGIN { printf "%.0f", bytes / 1000000 }'; }
unpacked=$(du -sb dist/switchboard | cut -f1)
packed=$(stat -c %s "$tarball")
echo "build: dist/switchboard: $(megabytes "$unpacked") MB unpacked"
echo "build: $tarball: $(megabytes "$packed") MB"
