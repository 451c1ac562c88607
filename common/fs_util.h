#pragma once
#include <string>
#include <vector>

namespace perennial::fs {

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

// Regular files in DIR whose names end with SUFFIX, sorted by name. Throws DataError if DIR
// is not a readable directory.
std::vector<std::string> listFiles(const std::string& dir, const std::string& suffix);

}  // namespace perennial::fs
