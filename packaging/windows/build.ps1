# Build the Windows bundle (PyInstaller, one folder) into dist\switchboard, then the installer
# dist\switchboard-<version>-windows-x64-setup.exe with Inno Setup 6. Run from anywhere:
#     powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1
# Needs uv and Inno Setup 6 (winget install JRSoftware.InnoSetup); ISCC.exe is looked for on PATH,
# in $env:ISCC, and where Inno Setup installs itself.
$ErrorActionPreference = "Stop"
Set-Location (Resolve-Path "$PSScriptRoot\..\..")

function Invoke-Checked {
    param([string]$Program, [string[]]$Arguments)
    & $Program @Arguments
    if ($LASTEXITCODE -ne 0) { throw "build: '$Program $Arguments' failed with exit code $LASTEXITCODE" }
}

$version = (Select-String -Path app\__init__.py -Pattern '^__version__ = "(.*)"$').Matches[0].Groups[1].Value
if (-not $version) { throw "build: cannot read __version__ from app\__init__.py" }

Invoke-Checked uv @("run", "python", "packaging\icons.py", "build\icons")
Invoke-Checked uv @("run", "pyinstaller", "--noconfirm", "--log-level", "WARN", "--distpath", "dist",
    "--workpath", "build\pyinstaller", "packaging\switchboard.spec")

$iscc = $env:ISCC
if (-not $iscc) { $iscc = (Get-Command ISCC.exe -ErrorAction SilentlyContinue).Source }
if (-not $iscc) {
    $iscc = @(
        "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe",
        "$env:ProgramFiles\Inno Setup 6\ISCC.exe",
        "$env:LOCALAPPDATA\Programs\Inno Setup 6\ISCC.exe"
    ) | Where-Object { Test-Path $_ } | Select-Object -First 1
}
if (-not $iscc) { throw "build: Inno Setup 6 is not installed (winget install JRSoftware.InnoSetup), or set ISCC to ISCC.exe" }

Invoke-Checked $iscc @("/DAppVersion=$version", "packaging\windows\switchboard.iss")

$bundle = (Get-ChildItem dist\switchboard -Recurse -File | Measure-Object Length -Sum).Sum / 1MB
$setup = Get-Item "dist\switchboard-$version-windows-x64-setup.exe"
"build: dist\switchboard: {0:N0} MB unpacked" -f $bundle
"build: {0}: {1:N0} MB" -f $setup.FullName, ($setup.Length / 1MB)
