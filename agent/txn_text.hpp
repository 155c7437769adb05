#pragma once
// The text form of a transaction that `keelctl txn` reads, etcdctl's format:
//
//   mod("key1") > "0"            <- compares, one per line, ANDed
//   value("key2") = "x"
//                                <- blank line
//   put key1 "new value"         <- ops run when every compare holds
//   del key2
//                                <- blank line
//   put key1 "created"           <- ops run otherwise
//
// Compare targets: value (val), version (ver), create (c), mod (m), lease; operators
// = != < >; an optional second argument makes it a range compare: mod("a", "b") > "0".
// Ops: put KEY VALUE [--lease=ID] [--prev-kv]; get KEY [END] [--prefix|--from-key];
// del KEY [END] [--prefix|--from-key] [--prev-kv]. Words may be "double quoted" with C
// escapes (\n \t \r \0 \xNN \" \\) or 'single quoted' literally.
#include <istream>
#include <string>
#include <vector>

#include "cluster/model/kv_types.hpp"

namespace keel::agent {

// Errors: invalid_argument naming the line and what is wrong with it.
Result<storage::TxnRequest> parse_txn(std::istream& in);
Result<std::vector<std::string>> tokenize_txn_line(const std::string& line);

}  // namespace keel::agent
