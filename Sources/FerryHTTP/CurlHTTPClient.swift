import CCurl
import FerryRedis
import Foundation
import Synchronization

extension CurlHTTPClient {
    /// One HTTP POST to send: what push delivery and webhooks need, nothing more.
    public struct Request: Sendable {
        /// An absolute `http` or `https` URL.
        public var url: String
        /// `Name: value` lines, as curl takes them.
        public var headers: [String]
        /// Sent as is, with `Content-Length`.
        public var body: [UInt8]
        /// The whole exchange, connection included.
        public var timeout: Duration
        /// The TCP and TLS handshake alone: an unreachable host fails fast.
        public var connectTimeout: Duration
        /// How much of the response body is kept; a longer body ends the transfer there.
        public var maxResponseBytes: Int

        /// The defaults keep a slow or chatty endpoint from holding a worker long.
        public init(
            url: String, headers: [String] = [], body: [UInt8], timeout: Duration, connectTimeout: Duration = .seconds(10),
            maxResponseBytes: Int = 64 * 1024
        ) {
            self.url = url
            self.headers = headers
            self.body = body
            self.timeout = timeout
            self.connectTimeout = connectTimeout
            self.maxResponseBytes = maxResponseBytes
        }
    }

    /// An HTTP response: the status, the headers (names lower-cased) and the start of the body.
    public struct Response: Sendable {
        /// The HTTP status code.
        public var status: Int
        /// Names lower-cased; a repeated header keeps its last value.
        public var headers: [String: String]
        /// The start of the body, up to the request's `maxResponseBytes`.
        public var body: [UInt8]
        /// The body was longer than the request's `maxResponseBytes`; ``body`` is its start.
        public var bodyTruncated: Bool
    }
}

/// A transfer that got no HTTP response: curl's error code and text (connection refused, DNS
/// failure, timeout, TLS verification), kept so logs and job statuses can name them.
public struct CurlTransferError: Error, Sendable, CustomStringConvertible {
    /// The `CURLcode` (7 couldn't connect, 28 timeout, 6 could not resolve host, 60 TLS peer).
    public var code: Int
    /// curl's own words for it (`curl_easy_strerror` and the error buffer).
    public var message: String

    public var description: String { "curl error \(code): \(message)" }
}

/// Sends HTTP requests with libcurl's multi interface on a thread of its own.
///
/// libcurl's transfers block or need an event loop; neither belongs on Swift's cooperative
/// pool. One thread drives every transfer of the client with `curl_multi_poll`, so many
/// requests run at once on one thread, and the multi handle's connection cache reuses
/// keep-alive connections across requests. Callers simply `await`; cancelling the calling task
/// aborts its transfer.
public final class CurlHTTPClient: Sendable {
    private let multi: CurlMulti

    /// - Parameter maxConnections: connections kept open for reuse (curl's `MAXCONNECTS`).
    public init(maxConnections: Int = 64) {
        self.multi = CurlMulti(maxConnections: maxConnections)
        let multi = self.multi
        let thread = Thread { multi.run() }
        thread.name = "ferry-http"
        thread.start()
    }

    deinit {
        close()
    }

    /// Stops the loop thread; transfers still running end with `CancellationError`.
    public func close() {
        multi.inbox.withLock { $0.closing = true }
        multi.wakeUp()
    }

    /// Sends the request and returns the response, whatever its status.
    ///
    /// - Throws: ``CurlTransferError`` when no response came; `CancellationError` when the task
    ///   was cancelled or the client closed.
    public func send(_ request: CurlHTTPClient.Request) async throws -> CurlHTTPClient.Response {
        let transfer = try Transfer(request, handles: multi.idleHandles)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = multi.inbox.withLock { inbox -> Bool in
                    if transfer.cancelled || inbox.closing { return false }
                    transfer.continuation = continuation
                    transfer.handedOver = true
                    inbox.added.append(transfer)
                    return true
                }
                if accepted {
                    multi.wakeUp()
                } else {
                    continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            multi.inbox.withLock { inbox in
                transfer.cancelled = true
                // The loop owns `continuation` once handed over; only flags this lock guards are read.
                if transfer.handedOver { inbox.cancelled.append(transfer) }
            }
            multi.wakeUp()
        }
    }
}

/// Easy handles of finished transfers, kept for the next ones: a fresh handle per request
/// (allocated, its buffers set up, then freed) showed in `ferry bench push` profiles, and
/// libcurl recommends reusing handles. A handle is reset before reuse, so nothing of the
/// previous request carries over; connections live in the multi handle's cache either way.
final class EasyHandlePool: Sendable {
    /// An easy handle at rest: owned by the pool, touched by no one until taken.
    private struct Idle: @unchecked Sendable {
        let easy: UnsafeMutableRawPointer
    }

    private let state = Mutex<(idle: [Idle], closed: Bool)>(([], false))
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// A reset handle, reused or new; nil only when libcurl cannot allocate one.
    func take() -> UnsafeMutableRawPointer? {
        if let idle = state.withLock({ $0.idle.popLast() }) {
            curl_easy_reset(idle.easy)
            return idle.easy
        }
        return curl_easy_init()
    }

    /// Keeps the handle for reuse, or frees it once the pool is full or closed.
    func put(_ easy: UnsafeMutableRawPointer) {
        let idle = Idle(easy: easy)
        let kept = state.withLock { state in
            if state.closed || state.idle.count >= capacity { return false }
            state.idle.append(idle)
            return true
        }
        if !kept { curl_easy_cleanup(easy) }
    }

    /// Frees every idle handle; handles put back later are freed at once.
    func close() {
        let idle = state.withLock { state in
            state.closed = true
            defer { state.idle.removeAll() }
            return state.idle
        }
        idle.forEach { curl_easy_cleanup($0.easy) }
    }
}

/// One request in flight: its easy handle and everything curl points into while it runs.
/// Touched by the caller until it is handed over under the inbox lock, then only by the loop.
final class Transfer: @unchecked Sendable {
    let easy: UnsafeMutableRawPointer
    private let handles: EasyHandlePool
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    let maxResponseBytes: Int
    var responseBody: [UInt8] = []
    var responseHeaders: [String: String] = [:]
    var truncated = false
    /// Set and read under the inbox lock only: the caller's task was cancelled.
    var cancelled = false
    /// Set and read under the inbox lock only: the loop has (or will have) the transfer.
    var handedOver = false
    var continuation: CheckedContinuation<CurlHTTPClient.Response, any Error>?

    init(_ request: CurlHTTPClient.Request, handles: EasyHandlePool) throws {
        guard let easy = handles.take() else { throw CurlTransferError(code: -1, message: "curl_easy_init failed") }
        self.easy = easy
        self.handles = handles
        self.maxResponseBytes = request.maxResponseBytes
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        for header in request.headers { headerList = curl_slist_append(headerList, header) }
        // No 100-continue round trip before larger bodies.
        headerList = curl_slist_append(headerList, "Expect:")

        let context = Unmanaged.passUnretained(self).toOpaque()
        var status = CURLE_OK
        func set(_ code: CURLcode) { if status == CURLE_OK { status = code } }
        set(ferry_curl_setopt_string(easy, CURLOPT_URL, request.url))
        set(ferry_curl_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(ferry_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1))
        set(ferry_curl_setopt_long(easy, CURLOPT_POST, 1))
        set(ferry_curl_setopt_long(easy, CURLOPT_POSTFIELDSIZE, request.body.count))
        request.body.withUnsafeBytes { bytes in
            // COPYPOSTFIELDS copies, so the body need not outlive this call.
            let empty: StaticString = ""
            let pointer = bytes.baseAddress ?? UnsafeRawPointer(empty.utf8Start)
            set(ferry_curl_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: pointer)))
        }
        set(ferry_curl_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList))
        set(ferry_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(request.timeout.milliseconds)))
        set(ferry_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout.milliseconds)))
        set(ferry_curl_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 1))
        set(ferry_curl_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 2))
        set(ferry_curl_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0))
        set(ferry_curl_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1))
        set(ferry_curl_setopt_string(easy, CURLOPT_USERAGENT, "ferry"))
        set(ferry_curl_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer))
        set(
            ferry_curl_setopt_data_callback(easy, CURLOPT_WRITEFUNCTION) { data, size, count, context in
                Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue().receiveBody(data, size * count)
            })
        set(ferry_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, context))
        set(
            ferry_curl_setopt_data_callback(easy, CURLOPT_HEADERFUNCTION) { data, size, count, context in
                Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue().receiveHeader(data, size * count)
            })
        set(ferry_curl_setopt_pointer(easy, CURLOPT_HEADERDATA, context))
        if status != CURLE_OK {
            throw CurlTransferError(code: Int(status.rawValue), message: String(cString: curl_easy_strerror(status)))
        }
    }

    deinit {
        // The handle is out of the multi handle by now (the loop removes it before finishing);
        // its options still point at the header list and error buffer freed here, which the
        // reset before its next use clears.
        handles.put(easy)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    private func receiveBody(_ data: UnsafeMutablePointer<CChar>?, _ length: Int) -> Int {
        guard let data else { return length }
        let room = maxResponseBytes - responseBody.count
        let bytes = UnsafeRawBufferPointer(start: data, count: length)
        responseBody.append(contentsOf: bytes.prefix(max(room, 0)))
        if length > room {
            truncated = true
            return 0  // ends the transfer: the rest is not read
        }
        return length
    }

    /// One header line, `Name: value\r\n`, parsed on the bytes: Foundation's trimming took a
    /// fifth of the HTTP thread's time (`ferry bench push` under `perf`).
    private func receiveHeader(_ data: UnsafeMutablePointer<CChar>?, _ length: Int) -> Int {
        guard let data else { return length }
        let line = UnsafeRawBufferPointer(start: data, count: length)
        if line.starts(with: "HTTP/".utf8) {
            responseHeaders = [:]  // a new response (after 100 Continue, say)
        } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            func trimmed(_ part: Slice<UnsafeRawBufferPointer>) -> Slice<UnsafeRawBufferPointer> {
                let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 || byte == 0x0d || byte == 0x0a }
                let start = part.firstIndex { !isSpace($0) } ?? part.endIndex
                let end = part[start...].lastIndex { !isSpace($0) }.map { $0 + 1 } ?? start
                return part[start..<end]
            }
            let name = trimmed(line[..<colon]).map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 0x20 : $0 }
            responseHeaders[String(decoding: name, as: UTF8.self)] = String(
                decoding: trimmed(line[(colon + 1)...]), as: UTF8.self)
        }
        return length
    }

    /// Resumes the caller with the outcome of a finished transfer.
    func finish(_ result: CURLcode) {
        var status = 0
        ferry_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        let outcome: Result<CurlHTTPClient.Response, any Error>
        if status > 0 && (result == CURLE_OK || (result == CURLE_WRITE_ERROR && truncated)) {
            outcome = .success(
                CurlHTTPClient.Response(status: status, headers: responseHeaders, body: responseBody, bodyTruncated: truncated))
        } else {
            let detail = String(cString: errorBuffer)
            let text = String(cString: curl_easy_strerror(result))
            outcome = .failure(
                CurlTransferError(code: Int(result.rawValue), message: detail.isEmpty ? text : "\(text): \(detail)"))
        }
        continuation?.resume(with: outcome)
        continuation = nil
    }

    func finishCancelled() {
        continuation?.resume(throwing: CancellationError())
        continuation = nil
    }
}

/// The multi handle and the loop that drives it. Callers reach the loop only through `inbox`.
final class CurlMulti: @unchecked Sendable {
    /// Requests waiting for the loop thread.
    struct Inbox {
        var added: [Transfer] = []
        var cancelled: [Transfer] = []
        var closing = false
        /// A wake-up was sent and the loop has not drained the inbox since: under load, one
        /// wake-up (a write to curl's wake-up pipe) serves many requests.
        var wakeUpPending = false
    }

    private let handle: UnsafeMutableRawPointer
    let inbox = Mutex(Inbox())
    let idleHandles: EasyHandlePool

    init(maxConnections: Int) {
        handle = curl_multi_init()  // nil only when out of memory at start-up
        ferry_curl_multi_setopt_long(handle, CURLMOPT_MAXCONNECTS, maxConnections)
        idleHandles = EasyHandlePool(capacity: maxConnections * 2)
    }

    /// Wakes the loop unless a wake-up is already on its way.
    func wakeUp() {
        let send = inbox.withLock { inbox in
            defer { inbox.wakeUpPending = true }
            return !inbox.wakeUpPending
        }
        if send { curl_multi_wakeup(handle) }
    }

    func run() {
        var active: [UnsafeMutableRawPointer: Transfer] = [:]
        while true {
            // `Transfer.cancelled` is written under this lock (the caller's cancellation handler),
            // so it is read here too, never after the lock is released.
            let (added, cancelledBeforeStart, cancelled, closing) = inbox.withLock { inbox in
                defer {
                    inbox.added.removeAll()
                    inbox.cancelled.removeAll()
                    inbox.wakeUpPending = false
                }
                return (
                    inbox.added.filter { !$0.cancelled }, inbox.added.filter(\.cancelled), inbox.cancelled, inbox.closing
                )
            }
            cancelledBeforeStart.forEach { $0.finishCancelled() }
            for transfer in added {
                active[transfer.easy] = transfer
                curl_multi_add_handle(handle, transfer.easy)
            }
            for transfer in cancelled where active.removeValue(forKey: transfer.easy) != nil {
                curl_multi_remove_handle(handle, transfer.easy)
                transfer.finishCancelled()
            }
            if closing { break }

            var running: Int32 = 0
            curl_multi_perform(handle, &running)
            var left: Int32 = 0
            while let message = curl_multi_info_read(handle, &left) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle,
                    let transfer = active.removeValue(forKey: easy)
                else { continue }
                let result = message.pointee.data.result
                curl_multi_remove_handle(handle, easy)
                transfer.finish(result)
            }
            curl_multi_poll(handle, nil, 0, 1000, nil)
        }
        for transfer in active.values {
            curl_multi_remove_handle(handle, transfer.easy)
            transfer.finishCancelled()
        }
        inbox.withLock { inbox in
            inbox.added.forEach { $0.finishCancelled() }
            inbox.added.removeAll()
        }
        curl_multi_cleanup(handle)
        idleHandles.close()
    }
}
