#include "scheduler/shard_links.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace perennial::sched {

void linkShards(const std::vector<std::string>& files, const std::string& dir, const std::vector<std::string>& names) {
  namespace stdfs = std::filesystem;
  PERENNIAL_CHECK(names.empty() || names.size() == files.size(), "linkShards: " << names.size() << " names for "
                                                                                << files.size() << " files");
  std::error_code ec;
  stdfs::remove_all(dir, ec);
  stdfs::create_directories(dir);
  char numbered[32];
  for (size_t k = 0; k < files.size(); ++k) {
    std::snprintf(numbered, sizeof numbered, "%09zu.h5", k);
    const std::string link = dir + "/" + (names.empty() ? std::string(numbered) : names[k]);
    if (::link(files[k].c_str(), link.c_str()) == 0) continue;
    const std::string target = stdfs::absolute(files[k]).lexically_normal().string();
    if (::symlink(target.c_str(), link.c_str()) != 0) {
      throw IoError(link + ": cannot link to " + target + ": " + std::strerror(errno));
    }
  }
}

}  // namespace perennial::sched
