#pragma once
#include <string>
#include <vector>

namespace perennial::fs {

// Whether PATH is a regular file, a directory, or anything at all (symbolic links followed).
// They never throw: a path the system cannot look up (too long, a loop of links, a parent it
// may not search) is none of them, so the caller's "no such file" message covers it. For paths
// from users and configurations; std::filesystem's one-argument forms throw on those.
bool isFile(const std::string& path);
bool isDirectory(const std::string& path);
bool exists(const std::string& path);

// Crash-safe publish of a small file: writes PATH.tmp.<pid> in the same directory, fsyncs it,
// renames it over PATH and fsyncs the directory. Readers see the old or the new content, never
// a mix. Throws IoError naming the file and the failing call.
void writeFileAtomic(const std::string& path, const std::string& content);

// fsync of a directory, so a rename inside it survives a crash.
void fsyncDir(const std::string& dir);

// fsync of a file's data (open read-only, fsync, close).
void fsyncFile(const std::string& path);

// Publishes a finished temporary file: rename TMP over PATH and fsync the directory. Call
// fsyncFile(TMP) first (kept separate so callers can overlap other work with it).
void publish(const std::string& tmp, const std::string& path);

// Appends LINE and a newline to PATH (created if missing) and fsyncs it. A write that fails or
// comes up short (a full disk, RLIMIT_FSIZE) is undone by truncating the file back, so it never
// ends in a torn line. Throws IoError naming the file and the failing call.
void appendLine(const std::string& path, const std::string& line);

// Regular files in DIR whose names end with SUFFIX, sorted by name. Throws DataError if DIR
// is not a readable directory.
std::vector<std::string> listFiles(const std::string& dir, const std::string& suffix);

// 128 bits from the kernel's random source (getrandom) as 32 lowercase hex digits: names and
// tokens that nobody else can guess in advance. Throws IoError if the source fails.
std::string randomHex();

}  // namespace perennial::fs
