import Glibc

/// Runs a fuzz target's harness over saved inputs: `fuzz-NAME PATH...`, each PATH a file or a
/// directory of files (a corpus). A crash is the failure; otherwise it prints how many inputs
/// ran. This is how CI replays the seed corpus and every input that once crashed.
public enum FuzzReplay {
    public static func run(name: String, _ harness: (UnsafeRawBufferPointer) -> Void) {
        let paths = Array(CommandLine.arguments.dropFirst())
        guard !paths.isEmpty, !paths.contains(where: { $0.hasPrefix("-") }) else {
            fputs("usage: \(name) FILE|DIRECTORY...\n  replays saved inputs through the harness (scripts/fuzz fuzzes)\n", stderr)
            exit(2)
        }
        var count = 0
        for path in paths {
            for file in files(path) {
                guard let bytes = read(file) else {
                    fputs("\(name): cannot read \(file)\n", stderr)
                    exit(1)
                }
                bytes.withUnsafeBytes { harness($0) }
                count += 1
            }
        }
        print("\(name): \(count) inputs replayed, no crash")
    }

    private static func files(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [path] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") { names.append("\(path)/\(name)") }
        }
        return names.sorted()
    }

    private static func read(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n == 0 { break }
            out += buffer[..<n]
        }
        return ferror(file) == 0 ? out : nil
    }
}
