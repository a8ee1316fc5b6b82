import Dispatch
import HTTPTypes
import Hummingbird
import Metrics
import Synchronization

/// Counts the API's requests and times them, under the names and dimensions of Hummingbird's
/// `MetricsMiddleware` (`FerryMetricsFactory` renames them to `ferry_api_*`), but leaves an
/// answer's body as the handler made it. Hummingbird's wraps every body in a closure to record
/// once it is written, which turns the server's one write of a buffered answer (head, body and
/// end together) into three, each a hop to the connection's event loop and a flush of its own:
/// that took about an eighth off the publish route's throughput (docs/design.md has the
/// figures). Here an answer whose length is known (every answer but a stream) is recorded when
/// the handler returns it, since writing it takes no time worth timing, and a stream
/// (server-sent events) when it ends, as Hummingbird's does.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    private let cache = RequestMetrics()

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        let start = DispatchTime.now().uptimeNanoseconds
        let active = cache.active(request.method)
        active.increment()
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            let status = (error as? any HTTPResponseError)?.status ?? .internalServerError
            let metrics = cache.endpoint(.init(route: context.endpointPath ?? "NotFound", method: request.method, status: status))
            metrics.requests.increment()
            metrics.errors.increment()
            active.decrement()
            throw error
        }
        let metrics = cache.endpoint(
            .init(route: context.endpointPath ?? "Unknown", method: request.method, status: response.status))
        @Sendable func record() {
            metrics.requests.increment()
            metrics.duration.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - start)
            active.decrement()
        }
        guard response.body.contentLength == nil else {
            record()
            return response
        }
        var streamed = response
        let body = response.body
        streamed.body = ResponseBody { writer in
            defer { record() }
            try await body.write(writer)
        }
        return streamed
    }
}

/// The metrics of each route, method and status seen, made once: a request only looks them up.
private final class RequestMetrics: Sendable {
    struct Endpoint: Hashable {
        let route: String
        let method: HTTPRequest.Method
        let status: HTTPResponse.Status
    }

    struct EndpointMetrics: Sendable {
        let requests: Counter
        let errors: Counter
        let duration: Metrics.Timer

        init(_ endpoint: Endpoint) {
            let dimensions = [
                ("http.route", endpoint.route), ("http.request.method", endpoint.method.rawValue),
                ("http.response.status_code", String(endpoint.status.code)),
            ]
            requests = Counter(label: "hb.requests", dimensions: dimensions)
            duration = Metrics.Timer(
                label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds)
            errors = Counter(
                label: "hb.request.errors",
                dimensions: [
                    ("http.route", endpoint.route), ("http.request.method", endpoint.method.rawValue),
                    ("error.type", String(endpoint.status.code)),
                ])
        }
    }

    private let endpoints = Mutex<[Endpoint: EndpointMetrics]>([:])
    private let methods = Mutex<[HTTPRequest.Method: Meter]>([:])

    func endpoint(_ endpoint: Endpoint) -> EndpointMetrics {
        endpoints.withLock { known in
            if let metrics = known[endpoint] { return metrics }
            let metrics = EndpointMetrics(endpoint)
            known[endpoint] = metrics
            return metrics
        }
    }

    func active(_ method: HTTPRequest.Method) -> Meter {
        methods.withLock { known in
            if let meter = known[method] { return meter }
            let meter = Meter(label: "http.server.active_requests", dimensions: [("http.request.method", method.rawValue)])
            known[method] = meter
            return meter
        }
    }
}
