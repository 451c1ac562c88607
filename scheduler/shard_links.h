#pragma once
// A directory of shards made of links: how a run's snapshot (ROOT/runs/<id>/data/), the decay
// trigger's evaluation and the validation gate's holdout are assembled without copying data.
// The trainer and `perennial eval` read a shard directory in file-name order, so the links are
// named to keep the order of FILES.
#include <string>
#include <vector>

namespace perennial::sched {

// Creates DIR (removing whatever was there) holding one link per file of FILES, in order: entry
// k is named NAMES[k], or "%09d.h5" of k when NAMES is empty. Each is a hard link where the file
// system allows one (the shard stays readable whatever happens to its name), else a symbolic
// link to the file's absolute path. Throws IoError naming the file it could not link.
void linkShards(const std::vector<std::string>& files, const std::string& dir,
                const std::vector<std::string>& names = {});

}  // namespace perennial::sched
