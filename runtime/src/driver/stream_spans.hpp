// The GPU time of spans of one stream's work (begin() to end()), summed without a host wait on the
// hot path: spans that have run are added when polled (each begin() polls), the others when
// awaited. Their events are reused once read, so a span on the hot path creates none after the
// first few.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "kjit/device.hpp"

namespace kjit::driver {

class StreamSpans {
 public:
  void begin(StreamHandle stream);
  void end(StreamHandle stream);  // on the stream of the matching begin()
  // The milliseconds of every span ended so far that has run; with `wait`, of every one.
  double total_ms(bool wait);

 private:
  using Span = std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>;
  std::vector<Span> open_;  // in the order recorded; the last may not have ended yet
  std::vector<Span> spare_;
  bool last_ended_ = true;
  double ms_ = 0;
};

}  // namespace kjit::driver
