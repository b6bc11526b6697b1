import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Scratch directories the CLI creates for itself: made with `mkdtemp` (a new directory, mode 0700, that
/// no other user can have planted — a predictable name under /tmp could be a symlink or a directory
/// someone else owns).
enum PrivateDirectory {
  /// Creates `<parent>/<prefix>XXXXXX`.
  /// - Throws: `CLIError` naming the parent when it cannot be created.
  static func make(in parent: String, prefix: String) throws -> String {
    var template = Array((parent as NSString).appendingPathComponent(prefix + "XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buf -> Bool in mkdtemp(buf.baseAddress!) != nil }
    guard made else { throw CLIError("cannot create a private directory in \(parent): \(String(cString: strerror(errno)))") }
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
  }
}

/// What a download may bring onto this machine: the tar stream comes from the sandbox and is untrusted.
/// It is extracted into a private staging directory as files owned by the caller (`--no-same-owner
/// --no-same-permissions`), then every entry is checked with `lstat`: only regular files, directories and
/// symbolic links are kept, set-user-ID/set-group-ID/sticky bits are refused, and only then is the result
/// moved to its destination. Anything else (a device node, a FIFO, a socket, a setuid file) fails the
/// download and the staging directory is removed: nothing of it stays behind.
enum SafeExtract {
  static let tarFlags = ["--no-same-owner", "--no-same-permissions", "--delay-directory-restore"]

  /// Checks the tree at `root` (not following symbolic links).
  /// - Throws: `CLIError` naming the first entry that is not allowed.
  static func check(_ root: String) throws {
    var entries = [root]
    while let path = entries.popLast() {
      var st = stat()
      guard lstat(path, &st) == 0 else { throw CLIError("cannot inspect \(path): \(String(cString: strerror(errno)))") }
      let type = st.st_mode & S_IFMT
      if st.st_mode & (S_ISUID | S_ISGID | S_ISVTX) != 0 {
        throw CLIError("refused: the sandbox sent \((path as NSString).lastPathComponent) with set-user-ID, set-group-ID or sticky bits")
      }
      switch type {
      case S_IFREG, S_IFLNK: continue
      case S_IFDIR:
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
          entries.append((path as NSString).appendingPathComponent(name))
        }
      default:
        throw CLIError("refused: the sandbox sent \((path as NSString).lastPathComponent), which is not a regular file, directory or symbolic link")
      }
    }
  }

  /// Moves `staging/base` to `dest/base`. An existing regular file or symbolic link there is replaced; an
  /// existing directory is refused (merging an untrusted tree into it is not done).
  static func install(staging: String, base: String, dest: String) throws -> String {
    let from = (staging as NSString).appendingPathComponent(base)
    let to = (dest as NSString).appendingPathComponent(base)
    var st = stat()
    if lstat(to, &st) == 0, st.st_mode & S_IFMT == S_IFDIR {
      throw CLIError("\(to) exists and is a directory; remove it or download to another directory")
    }
    guard rename(from, to) == 0 else { throw CLIError("cannot move the download to \(to): \(String(cString: strerror(errno)))") }
    return to
  }
}
