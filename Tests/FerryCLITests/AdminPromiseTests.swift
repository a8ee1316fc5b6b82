import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

// What the admin endpoints promise operators (issue 11): metrics promtool accepts, exact
// in-flight counts, and a clean stop.
extension AdminEndpointTests {
    @Test("promtool check metrics accepts a live scrape (HELP on every metric); in-flight is exact at scrape time")
    func promtoolAcceptsLiveScrape() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("promtool")
        let port = try freeLoopbackPort()
        let marker = FileManager.default.temporaryDirectory.appending(path: uniqueName("started")).path()
        defer { try? FileManager.default.removeItem(atPath: marker) }
        // A long lease: lease extensions, which also refresh the gauge, come only every 5 s.
        let worker = try startWorker(
            queue, redisURL: url, port: port,
            exec: #"d=$(cat); [ "$d" = poison ] && exit 65; [ "$d" = hold ] && { touch '\#(marker)'; sleep 30; }; exit 0"#,
            options: ["--lease", "10m", "--sample-interval", "200ms"])
        defer { worker.signal(SIGKILL) }
        #expect(await eventually { try await get(port, "/readyz").status == 200 })
        let publisher = Publisher(queue: try QueueName(queue), connection: try await TestRedis.connection())
        _ = try await publisher.publish([JobMessage(type: "t", data: "ok"), JobMessage(type: "t", data: "poison")])
        let labels = #"queue="\#(queue)",group="workers""#
        #expect(await eventually { sample(try await get(port, "/metrics").body, "ferry_stream_length{queue=\"\(queue)\"}") == 2 })

        _ = try await publisher.publish(JobMessage(type: "t", data: "hold"))
        #expect(await eventually { FileManager.default.fileExists(atPath: marker) }, "the held job started")
        let scrape = try await get(port, "/metrics").body
        #expect(sample(scrape, "ferry_jobs_in_flight{\(labels)}") == 1, "exact at scrape time")

        let checked = try await runProcess(
            try executable(named: "sh"), ["-c", #"printf '%s\n' "$1" | promtool check metrics"#, "sh", scrape])
        #expect(checked.status == 0, "\(checked.standardOutput)\(checked.standardError)")
        #expect(scrape.contains("# HELP ferry_jobs_total "))
        #expect(scrape.contains("# HELP ferry_group_lag "))
    }

    @Test("SIGTERM with the admin port on: no error lines, and a final worker_stopped event saying what it drained")
    func cleanStopWithAdminPort() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("cleanstop")
        let port = try freeLoopbackPort()
        let log = FileManager.default.temporaryDirectory.appending(path: uniqueName("admin")).path()
        let marker = log + ".started", release = log + ".release"
        // Runs until released, which the test does only once the worker is stopping: drained, not finished before.
        let worker = try startWorker(
            queue, redisURL: url, port: port,
            exec: "touch '\(marker)'; while [ ! -e '\(release)' ]; do sleep 0.05; done", log: log)
        defer { worker.signal(SIGKILL) }
        #expect(await eventually { try await get(port, "/readyz").status == 200 })
        _ = try await Publisher(queue: try QueueName(queue), connection: try await TestRedis.connection())
            .publish(JobMessage(type: "t", data: ""))
        #expect(await eventually { FileManager.default.fileExists(atPath: marker) }, "the job was running at SIGTERM")
        worker.signal(SIGTERM)
        #expect(await eventually { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("worker_stopping") })
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        #expect(await worker.waitForExit(killAfter: .seconds(30)) == 0)
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let errors = (try? String(contentsOfFile: log + ".err", encoding: .utf8)) ?? ""
        let lines = output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(!lines.contains { ["error", "critical"].contains($0["level"] as? String) }, "\(output)")
        #expect(!errors.contains("error") && !errors.contains("Error"), "\(errors)")
        let last = try #require(lines.last)
        #expect(last["event"] as? String == "worker_stopped", "\(output)")
        #expect(last["drained"] as? Int == 1 && last["interrupted"] as? Int == 0, "\(last)")
    }
}
