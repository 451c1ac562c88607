#include "scheduler/report/report.h"

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/fs_util.h"
#include "perennial/build_config.h"
#include "scheduler/report/report_css.h"  // generated from report.css (scheduler/CMakeLists.txt)
#include "scheduler/report/report_model.h"
#include "scheduler/report/report_sections.h"
#include "scheduler/report/report_text.h"

namespace perennial::sched {

namespace stdfs = std::filesystem;
using report::emptyState;
using report::h;
using report::isoUtc;

std::string renderReport(const ReportOptions& opt) {
  if (opt.root.empty()) throw ConfigError("--root: required (the scheduler's root directory)");
  if (!fs::isDirectory(opt.root)) throw ConfigError("--root: " + opt.root + ": no such directory");
  const report::Model m = report::loadModel(opt);
  const double now = opt.now > 0 ? opt.now : static_cast<double>(std::time(nullptr));
  const report::Champion ch = report::championOf(m);

  std::string o;
  o.reserve(256 * 1024);
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
       "<meta name=\"generator\" content=\"perennial " PERENNIAL_VERSION "\">\n"
       "<link rel=\"icon\" href=\"data:,\">\n<title>Perennial report &#8212; " + h(opt.root) + "</title>\n<style>\n" +
       std::string(report::kReportCss) + "</style>\n</head>\n<body>\n";
  o += "<header class=\"top\"><div class=\"wrap\"><h1>Perennial <span>&middot; scheduler report</span></h1><div class=\"meta\">root <code>" +
       h(opt.root) + "</code> &middot; generated " + h(isoUtc(now)) + " UTC";
  if (m.lastTick) o += " &middot; last tick " + h(isoUtc(std::atof(m.lastTick->c_str()))) + " UTC";
  o += " &middot; registry <code>" + h(m.registryDir) + "</code></div><nav>";
  for (const auto& [id, label] : std::vector<std::pair<const char*, const char*>>{
           {"quality", "Quality"}, {"curves", "Training"}, {"timeline", "Timeline"}, {"lineage", "Lineage"},
           {"verdicts", "Verdicts"}, {"runs", "Runs"}, {"quarantine", "Quarantine"}}) {
    o += std::string("<a href=\"#") + id + "\">" + label + "</a>";
  }
  o += "</nav></div></header>\n<main class=\"wrap\">\n";
  if (!m.haveCatalog) {
    o += "<div class=\"card\">" + emptyState("No catalog yet", "there is no " + opt.root + "/catalog.db: start the scheduler with `perennial sched run` or `perennial sched tick`") + "</div>\n";
  }
  o += report::summarySection(m, ch) + "\n";
  o += report::qualitySection(m) + "\n";
  o += report::curvesSection(m, ch.runId) + "\n";
  o += report::timelineSection(m) + "\n";
  o += report::lineageSection(m, ch) + "\n";
  o += report::verdictsSection(m) + "\n";
  o += report::runsSection(m, ch.runId) + "\n";
  o += report::quarantineSection(m) + "\n";
  o += "</main>\n<footer>perennial " PERENNIAL_VERSION " &middot; a static page: every chart is inline SVG, nothing is "
       "loaded from the network</footer>\n";
  o += "<script>\n(function () {\n  document.documentElement.setAttribute('data-report-ready', '1');\n"
       "  console.log('report-ok: ' + document.querySelectorAll('section').length + ' sections, ' +\n"
       "              document.querySelectorAll('svg.chart').length + ' charts');\n})();\n</script>\n</body>\n</html>\n";
  return o;
}

void writeReport(const std::string& root, const std::string& registryDir, const std::string& out) {
  ReportOptions opt;
  opt.root = root;
  opt.registryDir = registryDir;
  const std::string page = renderReport(opt);
  const stdfs::path parent = stdfs::path(out).parent_path();
  if (!parent.empty() && !fs::isDirectory(parent)) throw ConfigError("--out: " + out + ": no such directory " + parent.string());
  fs::writeFileAtomic(out, page);
}

}  // namespace perennial::sched
