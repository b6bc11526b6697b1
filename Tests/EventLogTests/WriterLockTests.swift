import Foundation
import Testing

@testable import EventLog

#if canImport(Glibc)
  import Glibc
#endif

/// The writer lock is released by `close` even while another reference to its open file description
/// exists — what a child process forked by another thread holds until its exec closes the `O_CLOEXEC`
/// descriptors. (CorruptionTests.byteFlipInDataFileIsFoundAtItsSeq once failed reopening its log with
/// "locked by another writer (pid <own pid>)" while parallel tests spawned processes.)
@Suite struct WriterLockTests {
  @Test func aDuplicateOfTheLockDescriptorDoesNotKeepTheLock() throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    try FileManager.default.createDirectory(atPath: tmp.log, withIntermediateDirectories: true)
    let lock = try WriterLockFile(directory: tmp.log)
    #expect(WriterLockFile.holder(directory: tmp.log) == getpid())
    // The forked child's copy: same open file description, another descriptor.
    let copy = dup(lock.fd)
    try #require(copy >= 0)
    defer { close(copy) }
    lock.release()
    #expect(WriterLockFile.holder(directory: tmp.log) == nil, "released although a copy of the descriptor is open")
    let again = try WriterLockFile(directory: tmp.log)
    again.release()
  }

  @Test func aChildProcessHoldingTheDescriptorDoesNotKeepTheLock() throws {
    let tmp = TempDir()
    defer { tmp.remove() }
    try FileManager.default.createDirectory(atPath: tmp.log, withIntermediateDirectories: true)
    let lock = try WriterLockFile(directory: tmp.log)
    // A real process holding the description: the lock's descriptor handed to `sleep` as its fd 3 (dup2
    // clears O_CLOEXEC), as a child between fork and exec holds it.
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, lock.fd, 3)
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("sleep"), strdup("30"), nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    try #require(posix_spawn(&pid, "/bin/sleep", &actions, nil, argv, environ) == 0)
    defer {
      kill(pid, SIGKILL)
      var status: Int32 = 0
      waitpid(pid, &status, 0)
    }
    lock.release()
    let again = try WriterLockFile(directory: tmp.log)
    #expect(WriterLockFile.holder(directory: tmp.log) == getpid())
    again.release()
  }
}
