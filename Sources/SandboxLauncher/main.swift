import SandboxConfinement

// `openshell-sandbox-launch <plan options> -- COMMAND [ARG…]`: confines itself, then executes COMMAND
// (SandboxConfinement/Launcher.swift). Started by the supervisor for every workload process.
Launcher.main(CommandLine.arguments)
