#!/usr/bin/env bash
# Build Switchboard.app (PyInstaller, packaging/switchboard.spec) and a disk image
# dist/Switchboard-<version>-macos-<arch>.dmg, on a Mac. Signing and notarization happen only
# when their secrets are set (packaging/README.md says how to get them):
#   SIGN_IDENTITY        a "Developer ID Application: Name (TEAMID)" identity in the keychain:
#                        the app and the disk image are signed with the hardened runtime.
#   NOTARY_PROFILE       a notarytool keychain profile (xcrun notarytool store-credentials), or
#   APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD   an Apple ID, its team and an app-specific password:
#                        the disk image is sent to Apple's notary service, waited for, and the
#                        ticket stapled to it. Needs SIGN_IDENTITY too.
# Without them the app is only ad-hoc signed (PyInstaller's default): it runs on this Mac, and on
# another one only after the user allows it (right-click > Open, or System Settings > Privacy &
# Security > Open Anyway).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(uname -s)" != "Darwin" ]; then
    echo "build: Switchboard.app can only be built on macOS (this is $(uname -s))." >&2
    exit 1
fi
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' app/__init__.py)
arch=$(uname -m)
app=dist/Switchboard.app
dmg="dist/Switchboard-${version}-macos-${arch}.dmg"

uv run python packaging/icons.py build/icons
uv run pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/switchboard.spec

if [ -n "${SIGN_IDENTITY:-}" ]; then
    echo "build: signing $app as $SIGN_IDENTITY"
    codesign --force --deep --options runtime --timestamp \
        --entitlements packaging/macos/entitlements.plist --sign "$SIGN_IDENTITY" "$app"
    codesign --verify --deep --strict --verbose=2 "$app"
else
    echo "build: SIGN_IDENTITY is not set: $app is ad-hoc signed only (not for other Macs)"
fi

# The disk image: the app and a link to /Applications to drag it onto.
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp -R "$app" "$staging/"
ln -s /Applications "$staging/Applications"
rm -f "$dmg"
hdiutil create -volname "Switchboard $version" -srcfolder "$staging" -ov -format UDZO "$dmg"

if [ -n "${SIGN_IDENTITY:-}" ]; then
    codesign --force --timestamp --sign "$SIGN_IDENTITY" "$dmg"
    if [ -n "${NOTARY_PROFILE:-}" ]; then
        credentials=(--keychain-profile "$NOTARY_PROFILE")
    elif [ -n "${APPLE_ID:-}" ] && [ -n "${APPLE_TEAM_ID:-}" ] && [ -n "${APPLE_APP_PASSWORD:-}" ]; then
        credentials=(--apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" --password "$APPLE_APP_PASSWORD")
    else
        credentials=()
    fi
    if [ ${#credentials[@]} -gt 0 ]; then
        echo "build: notarizing $dmg (this waits for Apple's answer, usually minutes)"
        xcrun notarytool submit "$dmg" "${credentials[@]}" --wait
        xcrun stapler staple "$dmg"
        xcrun stapler validate "$dmg"
        spctl --assess --type open --context context:primary-signature --verbose=2 "$dmg"
    else
        echo "build: no notarization credentials: $dmg is signed but not notarized"
    fi
fi

echo "build: $app: $(du -sm "$app" | cut -f1) MB"
echo "build: $dmg: $(du -sm "$dmg" | cut -f1) MB"
