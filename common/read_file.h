#pragma once
// Reading a whole (small) file: manifests, result.json, pid and exit records.
#include <string>

namespace perennial::fs {

// The file's bytes; throws IoError naming the file when it cannot be opened.
std::string readFile(const std::string& path);

// The file's bytes, or "" when it does not exist or cannot be opened (records that may not have
// been written yet).
std::string readFileIfPresent(const std::string& path);

}  // namespace perennial::fs
