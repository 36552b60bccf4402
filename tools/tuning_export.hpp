// The file format of `kjit cache export` / `import`: {"format": "kjit-tuning-results",
// "version": 1, "kjit": ..., "rows": [...]}, one row per tuned result with its environment.
// Import checks every row before anything is written: known op, a shape and config the op's
// rules accept for that arch, positive finite times, clean text; a bad row is refused by number.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cache/tuning/tuning_db.hpp"

namespace kjit::tools {

inline constexpr int kExportVersion = 1;

nlohmann::json export_row(const tuning::Best& best);
nlohmann::json export_document(const std::vector<tuning::Best>& rows);

// The rows of an export file, checked; throws InvalidArgument naming the file and the row.
std::vector<tuning::Best> import_document(const std::string& file);

// Text as a terminal should show it: control characters and invalid UTF-8 escaped.
std::string printable(const std::string& text);

}  // namespace kjit::tools
