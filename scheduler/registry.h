#pragma once
// The model registry: a directory tree, by default ROOT/registry/ under the scheduler root.
//
//   <name>/versions/v<N>/   one published version, immutable: model.h5 (weights), spec.json (the
//                           model and data spec), lineage.json, metrics.json, verdict.json and
//                           files.json (the SHA-256 of each of the others, written last); files
//                           are read-only
//   <name>/aliases.json     {"champion": "v3", "previous": "v2"}, replaced atomically
//   <name>/history.jsonl    every promotion and rollback, appended
//
// Publishing writes a temporary directory beside the versions, fsyncs every file and the
// directory, then renames it into place: a version is complete or absent, never partial.
// Names (model names, versions, aliases) are refused when they could escape the tree or
// confuse a shell: no '/', '\', "..", leading '.', control characters, or more than 100 bytes.
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace perennial::sched {

struct PublishRequest {
  std::string name;
  std::string weights;  // the model.h5 to copy
  std::string runId;    // a version already published from this run is returned instead
  nlohmann::json spec, lineage, metrics, verdict;
};

// One line of <name>/history.jsonl: a promotion or a rollback.
struct HistoryEntry {
  std::string action;        // promote | rollback
  std::string from;          // the champion before ("" for the first promotion)
  std::string to;            // the champion after
  std::string reason;
  std::optional<double> at;  // Unix seconds
};

struct VersionInfo {
  std::string name, version, dir;
  nlohmann::json spec, lineage, metrics, verdict;
  std::vector<std::string> aliases;
};

class Registry {
 public:
  explicit Registry(std::string dir);
  const std::string& dir() const { return dir_; }

  // Throws ConfigError("WHAT 'NAME': ...") for a name that is not allowed.
  static void checkName(const std::string& what, const std::string& name);

  // Returns the version (v<N>).
  std::string publish(const PublishRequest& request);
  // Moves `champion` to VERSION and `previous` to the old champion; returns the old champion.
  std::optional<std::string> promote(const std::string& name, const std::string& version, const std::string& reason);
  // Moves `champion` back to `previous`; returns the new champion. Throws ConfigError when there
  // is nothing to roll back to.
  std::string rollback(const std::string& name, const std::string& reason);

  std::vector<std::string> models() const;
  std::vector<std::string> versions(const std::string& name) const;  // in version order
  nlohmann::json aliases(const std::string& name) const;
  std::optional<std::string> alias(const std::string& name, const std::string& alias) const;
  // "v3", "champion" or "previous" -> a version; throws ConfigError when there is none.
  std::string resolve(const std::string& name, const std::string& versionOrAlias) const;
  VersionInfo show(const std::string& name, const std::string& version) const;
  // Every promotion and rollback of NAME, oldest first (none when it has no history). A line that
  // is not a JSON object (cut short by a crash) is skipped; a field that does not have the type
  // the registry writes reads as absent ("", or no time for a non-finite or non-number "at").
  std::vector<HistoryEntry> history(const std::string& name) const;
  // The directory of a version (v<N>), from its name alone: nothing in it is read.
  std::string path(const std::string& name, const std::string& version) const { return versionDir(name, version); }
  // Problems found (empty: the version's files match files.json and are read-only).
  std::vector<std::string> verify(const std::string& name, const std::string& version) const;
  // Why a version cannot be used (empty: it can): it does not exist, files.json or a file it
  // lists is missing, unreadable or differs from its recorded SHA-256, or a JSON file does not
  // parse. Unlike verify(), permissions are not judged: a file made writable is still intact.
  std::vector<std::string> damage(const std::string& name, const std::string& version) const;
  // Copies a version's files into OUT (created; must not exist).
  void exportTo(const std::string& name, const std::string& version, const std::string& out) const;

 private:
  std::string modelDir(const std::string& name) const;
  std::string versionDir(const std::string& name, const std::string& version) const;
  void writeAliases(const std::string& name, const nlohmann::json& aliases, const nlohmann::json& entry);
  // The files of version directory DIR against its files.json (with MODES: and read-only).
  std::vector<std::string> checkFiles(const std::string& dir, bool modes) const;
  std::string dir_;
};

// The registry a command names: --registry DIR, else ROOT/registry (--root); throws ConfigError
// when neither is given.
std::string registryDirFrom(const std::string& registry, const std::string& root);
// NAME[:VERSION] -> (name, version or alias); the version is DEFAULT_VERSION when REF has none.
std::pair<std::string, std::string> splitModelRef(const std::string& ref, const std::string& defaultVersion);

// Runs the on_promote command ARGV (no shell) with the version's path and metadata in its
// environment: PERENNIAL_MODEL, PERENNIAL_VERSION, PERENNIAL_VERSION_DIR, PERENNIAL_WEIGHTS,
// PERENNIAL_PREVIOUS, PERENNIAL_ACCURACY, PERENNIAL_RUN. Returns its exit status (124 when it
// ran longer than TIMEOUT_S); its output is appended to LOG.
int runOnPromote(const std::vector<std::string>& argv, const VersionInfo& version, const std::string& previous,
                 const std::string& log, double timeoutS);

}  // namespace perennial::sched
