import CHiredis

/// Owns one hiredis context and frees it exactly once, when the last reference goes.
///
/// A context is not thread-safe and belongs to one ``RedisConnection``; dropping the reference
/// is how the connection discards a context after an I/O error. (The connection does not free
/// it in an `isolated deinit`: Swift 6.3's optimizer hits a request cycle on that in client
/// modules, so ownership lives here instead.)
final class HiredisContext {
    let pointer: UnsafeMutablePointer<redisContext>

    init(_ pointer: UnsafeMutablePointer<redisContext>) {
        self.pointer = pointer
    }

    deinit {
        redisFree(pointer)
    }
}

@available(*, unavailable)
extension HiredisContext: Sendable {}
