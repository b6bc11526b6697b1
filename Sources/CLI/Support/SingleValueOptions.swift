/// Options every command takes at most once. ArgumentParser keeps the last of a repeated single-value option
/// silently (`provider create --name a --name b` would create `b`); for a name that hides a mistake, so the
/// CLI refuses it before parsing. No command takes more than one `--name` (several objects are positional
/// arguments, e.g. `provider delete A B`).
enum SingleValueOptions {
  /// The options checked.
  static let names = ["--name"]

  /// The error line for the first option of ``names`` given more than once before `--` (what follows `--`
  /// belongs to a command run in a sandbox), or nil.
  /// - Parameter args: the arguments after the program name, as typed (`--name X` or `--name=X`).
  static func problem(_ args: [String]) -> String? {
    for option in names {
      var values: [String] = []
      var i = 0
      while i < args.count, args[i] != "--" {
        if args[i] == option {
          values.append(i + 1 < args.count ? args[i + 1] : "")
          i += 2
          continue
        }
        if args[i].hasPrefix(option + "=") { values.append(String(args[i].dropFirst(option.count + 1))) }
        i += 1
      }
      if values.count > 1 {
        return "\(option) given \(values.count) times (\(values.map { "'\($0)'" }.joined(separator: ", "))): give it once"
      }
    }
    return nil
  }
}
