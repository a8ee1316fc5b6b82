import CCurl
import CHiredis
import Testing

@Suite("System libraries")
struct SystemLibraryTests {
    @Test("hiredis is the 0.14 series Debian ships, which Ferry's error handling is written against")
    func hiredisVersion() {
        #expect(HIREDIS_MAJOR == 0)
        #expect(HIREDIS_MINOR == 14)
    }

    @Test("libcurl links and speaks HTTPS, which push delivery needs")
    func curlWithTLS() throws {
        let info = try #require(ferry_curl_version_info())
        #expect(info.pointee.features & CURL_VERSION_SSL != 0)
        var protocols: [String] = []
        var cursor = try #require(info.pointee.protocols)
        while let name = cursor.pointee {
            protocols.append(String(cString: name))
            cursor += 1
        }
        #expect(protocols.contains("https"))
    }

    @Test("the typed setopt shims reach curl: an unknown option is rejected, a known one accepted")
    func setoptShims() throws {
        let handle = try #require(curl_easy_init())
        defer { curl_easy_cleanup(handle) }
        #expect(ferry_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, 1000) == CURLE_OK)
        #expect(ferry_curl_setopt_string(handle, CURLOPT_URL, "http://127.0.0.1:1/") == CURLE_OK)
    }
}
