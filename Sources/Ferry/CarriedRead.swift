import FerryRedis
import Synchronization

/// The read loop's next read of new entries, carried by the write batcher's next flush: the
/// acknowledgements that free slots and the read that fills them go to Redis in one pipeline,
/// one round trip a round as a plain `XACK` + `XREADGROUP` loop has, instead of a flush and then
/// a read on the reader's connection (docs/design.md, "Reads carried by the flush").
///
/// The read loop waits here (``next(count:idle:flushing:)``) instead of for a free slot while its
/// last read was full. The flush built next takes the read (``take()``) when at least one slot
/// is free, asks for as many entries as are free then, and hands the reply back. The read goes
/// first in the flush's pipeline and its reply comes back as soon as it is read
/// (``RedisConnection/EarlyReplies``), so the jobs it brings run while Redis still runs the
/// acknowledgements behind it. A waiting read
/// is called off (``Outcome/notCarried``), and the loop reads on its own connection as before,
/// when a handler slot would sit idle and no flush is under way to carry it (``slotsChanged()``,
/// ``flushesEnded()``: a job that ended without a write, or whose transition's flush was built
/// while it still held its slot), or when the worker pauses, stops, waits on limits or its
/// acknowledgements fail (the count is nil then). While every slot is taken and no flush is under way, it waits for a
/// job to end, as the loop waits for a free slot.
final class CarriedRead: Sendable {
    /// How a wait for a carried read ended.
    enum Outcome: Sendable {
        /// A flush carried the read: what it read, and how many entries it asked for.
        case read(Worker.Read, asked: Int)
        /// The flush carrying the read failed, or Redis refused the read.
        case failed(RedisError)
        /// No flush will carry it: the loop reads on its own connection.
        case notCarried
    }

    private struct Waiter {
        /// How many entries a read may take now: nil calls the read off, 0 leaves it for a later flush.
        let count: @Sendable () -> Int?
        /// Whether a handler slot is free with no job read ahead to take it: only then is a read
        /// that no flush carries worth making on the loop's own connection (room to read ahead
        /// alone waits for the next job's end, whose flush carries it).
        let idle: @Sendable () -> Bool
        /// Whether a flush is under way (or about to start): the batcher will build another.
        let flushing: @Sendable () -> Bool
        let done: CheckedContinuation<Outcome, Never>
    }

    private let waiter = Mutex<Waiter?>(nil)

    /// Waits for the next flush to carry a read. `count`, `idle` and `flushing` as in
    /// ``Waiter``; they are called under this type's lock and must take no lock that waits for it.
    func next(
        count: @escaping @Sendable () -> Int?, idle: @escaping @Sendable () -> Bool,
        flushing: @escaping @Sendable () -> Bool
    ) async -> Outcome {
        await withCheckedContinuation { done in
            waiter.withLock { $0 = Waiter(count: count, idle: idle, flushing: flushing, done: done) }
            // Slots may have freed before the read waited, with no flush left to carry it.
            slotsChanged()
        }
    }

    /// Whether the read loop waits here now.
    var isWaiting: Bool { waiter.withLock { $0 != nil } }

    /// The flush being built takes the waiting read, if a slot is free for it: how many
    /// entries to ask for, and where the outcome goes (the first outcome given counts; later
    /// ones are ignored, as a read delivered early needs no second delivery when the flush ends).
    func take() -> (count: Int, deliver: @Sendable (Outcome) -> Void)? {
        // The waiter leaves under the lock, taken or called off; it is resumed outside it.
        let (left, count) = waiter.withLock { waiter -> (Waiter?, Int?) in
            guard let current = waiter else { return (nil, nil) }
            let count = current.count()
            if count == 0 { return (nil, nil) }  // no slot free: a later flush carries it
            waiter = nil
            return (current, count)
        }
        guard let left else { return nil }
        guard let count else {
            left.done.resume(returning: .notCarried)
            return nil
        }
        let once = Once(left.done)
        return (count, { once.take()?.resume(returning: $0) })
    }

    /// A continuation resumed once, whoever comes first.
    private final class Once: Sendable {
        private let continuation: Mutex<CheckedContinuation<Outcome, Never>?>
        init(_ continuation: CheckedContinuation<Outcome, Never>) { self.continuation = Mutex(continuation) }
        func take() -> CheckedContinuation<Outcome, Never>? { continuation.withLock { $0.take() } }
    }

    /// The batcher has nothing left to flush: a read still waiting is called off if a handler
    /// slot would sit idle (no flush is left to carry it).
    func flushesEnded() { slotsChanged() }

    /// A job ended or an acknowledgement landed: a read still waiting is called off when a
    /// handler slot would sit idle and no flush is under way to carry it.
    func slotsChanged() {
        let calledOff = waiter.withLock { waiter -> CheckedContinuation<Outcome, Never>? in
            guard let current = waiter else { return nil }
            if current.count() != nil && (!current.idle() || current.flushing()) { return nil }
            waiter = nil
            return current.done
        }
        calledOff?.resume(returning: .notCarried)
    }
}
