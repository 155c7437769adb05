#include "agent/txn_text.hpp"

#include <cctype>
#include <stdexcept>
#include <tuple>

namespace keel::agent {

using namespace keel::storage;

namespace {

// Thrown and caught only inside this file; the public functions return values.
struct UsageError {
  std::string message;
};

// Splits a line into tokens: whitespace-separated words, "double quoted" with C escapes
// (\" \\ \n \t \r \0 \xNN), or 'single quoted' literally.
std::vector<std::string> tokenize(const std::string& line) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i])))
      ++i;
    if (i >= line.size()) break;
    std::string tok;
    while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) {
      char c = line[i];
      if (c == '"') {
        ++i;
        bool closed = false;
        while (i < line.size()) {
          char d = line[i++];
          if (d == '"') {
            closed = true;
            break;
          }
          if (d != '\\') {
            tok += d;
            continue;
          }
          if (i >= line.size()) break;
          char e = line[i++];
          switch (e) {
            case 'n':
              tok += '\n';
              break;
            case 't':
              tok += '\t';
              break;
            case 'r':
              tok += '\r';
              break;
            case '0':
              tok += '\0';
              break;
            case 'x': {
              if (i + 2 > line.size()) throw UsageError{"bad \\x escape in: " + line};
              tok += static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16));
              i += 2;
              break;
            }
            default:
              tok += e;
          }
        }
        if (!closed) throw UsageError{"unterminated quote in: " + line};
      } else if (c == '\'') {
        size_t end = line.find('\'', i + 1);
        if (end == std::string::npos) throw UsageError{"unterminated quote in: " + line};
        tok += line.substr(i + 1, end - i - 1);
        i = end + 1;
      } else {
        tok += c;
        ++i;
      }
    }
    out.push_back(std::move(tok));
  }
  return out;
}

int64_t parse_int(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    int64_t v = std::stoll(s, &used, 0);
    if (used != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw UsageError{what + " must be an integer; got \"" + s + "\""};
  }
}

// target("key"[, "range_end"]) op value     e.g.  mod("k") > "0",  value("k") = "v"
Compare parse_compare(const std::string& line) {
  size_t open = line.find('(');
  size_t close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    throw UsageError{"compare must look like value(\"key\") = \"v\"; got: " + line};
  }
  std::string target = line.substr(0, open);
  while (!target.empty() && std::isspace(static_cast<unsigned char>(target.back())))
    target.pop_back();
  auto args = tokenize(std::string(line.substr(open + 1, close - open - 1)));
  // Allow "a", "b" with a comma.
  std::vector<std::string> keys;
  for (auto& a : args) {
    std::string t = a;
    if (!t.empty() && t.back() == ',') t.pop_back();
    if (t == ",") continue;
    keys.push_back(t);
  }
  auto rest = tokenize(line.substr(close + 1));
  if (keys.empty() || keys.size() > 2 || rest.size() != 2) {
    throw UsageError{"compare must look like value(\"key\") = \"v\"; got: " + line};
  }
  Compare c;
  c.key = keys[0];
  if (keys.size() == 2) c.range_end = keys[1];
  const std::string& op = rest[0];
  if (op == "=" || op == "==")
    c.result = CompareResult::equal;
  else if (op == "!=")
    c.result = CompareResult::not_equal;
  else if (op == "<")
    c.result = CompareResult::less;
  else if (op == ">")
    c.result = CompareResult::greater;
  else
    throw UsageError{"compare operator must be =, !=, < or >; got " + op};
  if (target == "value" || target == "val" || target == "v") {
    c.target = CompareTarget::value;
    c.value = rest[1];
  } else {
    if (target == "version" || target == "ver")
      c.target = CompareTarget::version;
    else if (target == "create" || target == "c")
      c.target = CompareTarget::create;
    else if (target == "mod" || target == "m")
      c.target = CompareTarget::mod;
    else if (target == "lease")
      c.target = CompareTarget::lease;
    else
      throw UsageError{"compare target must be value, version, create, mod or lease; got " +
                       target};
    c.number = parse_int(rest[1], target + "(...)");
  }
  return c;
}

RequestOp parse_op(const std::string& line) {
  auto t = tokenize(line);
  std::vector<std::string> pos;
  bool prefix = false, prev_kv = false, from_key = false;
  int64_t lease = 0;
  for (size_t i = 1; i < t.size(); ++i) {
    if (t[i] == "--prefix")
      prefix = true;
    else if (t[i] == "--prev-kv")
      prev_kv = true;
    else if (t[i] == "--from-key")
      from_key = true;
    else if (t[i].rfind("--lease=", 0) == 0)
      lease = parse_int(t[i].substr(8), "--lease");
    else if (t[i].rfind("--", 0) == 0)
      throw UsageError{"unknown option " + t[i] + " in: " + line};
    else
      pos.push_back(t[i]);
  }
  auto range_of = [&](const std::string& verb) -> std::pair<std::string, std::string> {
    if (pos.empty() || pos.size() > 2) throw UsageError{verb + " takes key [range_end]: " + line};
    if (prefix) return {pos[0], prefix_end(pos[0])};
    if (from_key) return {pos[0], std::string(1, '\0')};
    return {pos[0], pos.size() == 2 ? pos[1] : ""};
  };
  if (t.empty()) throw UsageError{"empty op"};
  if (t[0] == "put") {
    if (pos.size() != 2) throw UsageError{"put takes key value: " + line};
    PutRequest p;
    p.key = pos[0];
    p.value = pos[1];
    p.lease = lease;
    p.prev_kv = prev_kv;
    return p;
  }
  if (t[0] == "get") {
    RangeRequest r;
    std::tie(r.key, r.range_end) = range_of("get");
    return r;
  }
  if (t[0] == "del" || t[0] == "delete") {
    DeleteRangeRequest d;
    std::tie(d.key, d.range_end) = range_of("del");
    d.prev_kv = prev_kv;
    return d;
  }
  throw UsageError{"op must be put, get or del; got: " + line};
}

TxnRequest parse_txn_text(std::istream& in) {
  TxnRequest txn;
  int section = 0;  // 0 compares, 1 success, 2 failure
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
    if (blank) {
      if (in_section || section == 0) ++section;  // a blank line ends a section
      in_section = false;
      if (section > 2) break;
      continue;
    }
    in_section = true;
    if (section == 0)
      txn.compare.push_back(parse_compare(line));
    else if (section == 1)
      txn.success.push_back(parse_op(line));
    else
      txn.failure.push_back(parse_op(line));
  }
  return txn;
}

}  // namespace

Result<TxnRequest> parse_txn(std::istream& in) {
  try {
    return parse_txn_text(in);
  } catch (const UsageError& e) {
    return make_error(ErrorCode::invalid_argument, e.message);
  }
}

Result<std::vector<std::string>> tokenize_txn_line(const std::string& line) {
  try {
    return tokenize(line);
  } catch (const UsageError& e) {
    return make_error(ErrorCode::invalid_argument, e.message);
  }
}

}  // namespace keel::agent
