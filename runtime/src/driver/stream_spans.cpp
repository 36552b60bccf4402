#include "driver/stream_spans.hpp"

#include <cstddef>

namespace kjit::driver {

void StreamSpans::begin(StreamHandle stream) {
  // A span left open (its work failed to queue) times nothing: drop it.
  if (!open_.empty() && !open_.back().second) open_.pop_back();
  open_.emplace_back(std::make_unique<Event>(), nullptr);
  open_.back().first->record(stream);
}

void StreamSpans::end(StreamHandle stream) {
  open_.back().second = std::make_unique<Event>();
  open_.back().second->record(stream);
}

double StreamSpans::total_ms(bool wait) {
  std::size_t n = 0;
  for (; n < open_.size(); ++n) {
    auto& [first, last] = open_[n];
    if (!last) break;  // the span being recorded
    if (wait) {
      last->synchronize();
    } else if (!last->done()) {
      break;
    }
    ms_ += last->elapsed_ms_since(*first);
  }
  open_.erase(open_.begin(), open_.begin() + static_cast<std::ptrdiff_t>(n));
  return ms_;
}

}  // namespace kjit::driver
