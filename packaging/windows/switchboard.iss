; Inno Setup 6 script: the Windows installer for Switchboard, built by packaging/windows/build.ps1
; (which first builds the bundle into dist\switchboard and the icons into build\icons).
;   ISCC.exe /DAppVersion=0.1.0 packaging\windows\switchboard.iss
; Installs for the current user without administrator rights by default (in
; %LOCALAPPDATA%\Programs\Switchboard); the first page offers "for all users" to an administrator.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#define AppName "Switchboard"
#define AppExe "switchboard.exe"
; The Run value the app's own "Start Switchboard when I sign in" setting reads and writes
; (app/services/autostart.py: RUN_KEY, RUN_VALUE).
#define RunKey "Software\Microsoft\Windows\CurrentVersion\Run"
#define RunValue "Switchboard"

[Setup]
; AppId identifies the app for upgrades and uninstall: never change it.
AppId={{B3FDDF61-C77D-4DCF-9A1B-1E84B2B126EE}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Switchboard
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
; The sign-in task writes to the installing user's registry even in an all-users install.
UsedUserAreasWarning=no
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=switchboard-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\build\icons\switchboard.ico
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
; Close a running Switchboard before replacing its files, and start it again afterwards.
CloseApplications=yes
RestartApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "autostart"; Description: "Start Switchboard when I sign in"; GroupDescription: "When you sign in:"; Flags: unchecked

[Files]
Source: "..\..\dist\switchboard\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; Parameters: "gui"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Parameters: "gui"; Tasks: desktopicon

[Registry]
; The same value the app's setting writes: the setting shows it ticked, and can untick it.
Root: HKCU; Subkey: "{#RunKey}"; ValueType: string; ValueName: "{#RunValue}"; ValueData: """{app}\{#AppExe}"" gui"; Tasks: autostart; Flags: uninsdeletevalue

[Run]
Filename: "{app}\{#AppExe}"; Parameters: "gui"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
// Uninstalling removes the sign-in entry however it was made: by the task above, or later by
// the app's own setting (which the [Registry] flag alone would leave behind).
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RegDeleteValue(HKEY_CURRENT_USER, '{#RunKey}', '{#RunValue}');
end;
