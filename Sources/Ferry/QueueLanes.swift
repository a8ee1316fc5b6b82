import FerryRedis

extension QueueKeys {
    /// The priority lanes other than normal that `levels` (the members of ``lanes``) name, most
    /// urgent first; unknown members are left out.
    func priorities(inLanes levels: RedisReply) -> [JobPriority] {
        Set((levels.array ?? []).compactMap { $0.string.flatMap(JobPriority.init(text:)) }).subtracting([.normal]).sorted()
    }

    /// The streams of every lane `levels` names: ``jobs`` (the normal lane) first, then the
    /// others most urgent first.
    func laneStreams(inLanes levels: RedisReply) -> [String] {
        [jobs] + priorities(inLanes: levels).map(lane)
    }
}

extension RedisConnection {
    /// The streams of `keys`' queue's priority lanes, the normal lane (``QueueKeys/jobs``) first:
    /// every stream that holds its jobs.
    func laneStreams(of keys: QueueKeys) throws(FerryError) -> [String] {
        do {
            return keys.laneStreams(inLanes: try send(RedisCommand("SMEMBERS", [.string(keys.lanes)])))
        } catch {
            throw FerryError(error)
        }
    }
}
