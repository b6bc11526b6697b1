#ifndef CNAMESERVICE_H
#define CNAMESERVICE_H

/// Pins glibc's name-service databases that a process may consult — hosts to "files dns", passwd and group
/// to "files" — whatever the host's /etc/nsswitch.conf lists (`__nss_configure_lookup`, <nss.h>).
///
/// For a fully static executable: glibc has the files and dns services built in, but any other service
/// named in nsswitch.conf (systemd, mdns4_minimal, resolve, myhostname, …) is loaded with dlopen, which
/// brings the host's shared libc into the static process — a configuration glibc does not support.
/// Returns 0, or -1 when glibc refused a database (errno set).
int cnameservice_pin_files_and_dns(void);

#endif
