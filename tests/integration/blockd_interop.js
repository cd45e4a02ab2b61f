// blockd_interop.js: the AWS SDK for JavaScript v3 (@aws-sdk/client-s3) against tessera-blockd.
// Run by blockd_interop.sh: node blockd_interop.js ENDPOINT ACCESS_KEY SECRET_KEY BUCKET
// Prints "ok - ..." / "not ok - ..." lines; exit 0 when everything passed.
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import {
	S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand, HeadObjectCommand,
	DeleteObjectCommand, ListObjectsV2Command,
} from "@aws-sdk/client-s3";

const [endpoint, ak, sk, bucket] = process.argv.slice(2);
let failed = 0;
const ok = (cond, what, extra) => {
	console.log(`${cond ? "ok" : "not ok"} - sdk: ${what}${cond || !extra ? "" : ` (${extra})`}`);
	if (!cond) failed++;
};
const client = (opts = {}) => new S3Client({
	endpoint, region: "us-east-1", forcePathStyle: true, maxAttempts: 1,
	credentials: { accessKeyId: ak, secretAccessKey: sk }, ...opts,
});
const s3 = client();
const plain = client({ requestChecksumCalculation: "WHEN_REQUIRED",
	responseChecksumValidation: "WHEN_REQUIRED" });
const bytes = async (body) => Buffer.from(await body.transformToByteArray());
const md5 = (b) => createHash("md5").update(b).digest("hex");
const err = async (p) => { try { await p; return null; } catch (e) { return e; } };

async function main() {
	const big = randomBytes(1 << 20), small = randomBytes(4096), streamed = randomBytes(300000);

	await s3.send(new CreateBucketCommand({ Bucket: bucket }));
	let r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/big", Body: big }));
	ok(r.ETag === `"${md5(big)}"`, "PutObject 1 MiB (flexible checksum CRC32 header) -> MD5 ETag",
		r.ETag);
	r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/crc32c", Body: small,
		ChecksumAlgorithm: "CRC32C" }));
	ok(r.ETag === `"${md5(small)}"`, "PutObject with x-amz-checksum-crc32c");
	r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/sha256", Body: small,
		ChecksumAlgorithm: "SHA256" }));
	ok(r.ETag === `"${md5(small)}"`, "PutObject with x-amz-checksum-sha256");
	r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/stream",
		Body: Readable.from([streamed.subarray(0, 100000), streamed.subarray(100000)]),
		ContentLength: streamed.length }));
	ok(r.ETag === `"${md5(streamed)}"`,
		"PutObject of a stream (aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER, CRC32 trailer)");
	r = await plain.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/plain", Body: small,
		ContentMD5: createHash("md5").update(small).digest("base64") }));
	ok(r.ETag === `"${md5(small)}"`, "PutObject with Content-MD5, checksums WHEN_REQUIRED");
	let e = await err(plain.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/badmd5",
		Body: small, ContentMD5: createHash("md5").update("other").digest("base64") })));
	ok(e && e.name === "BadDigest", "PutObject with a wrong Content-MD5 -> BadDigest", e && e.name);

	r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/big" }));
	ok((await bytes(r.Body)).equals(big), "GetObject returns the 1 MiB body");
	r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/stream" }));
	ok((await bytes(r.Body)).equals(streamed), "GetObject returns the streamed body");
	r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/big",
		Range: "bytes=1000-66535" }));
	ok(r.$metadata.httpStatusCode === 206 && r.ContentRange === `bytes 1000-66535/${big.length}` &&
		(await bytes(r.Body)).equals(big.subarray(1000, 66536)), "ranged GetObject -> 206, the slice",
		r.ContentRange);
	r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/big", Range: "bytes=-10" }));
	ok((await bytes(r.Body)).equals(big.subarray(big.length - 10)), "suffix-ranged GetObject");
	e = await err(s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/big",
		Range: `bytes=${big.length}-` })));
	ok(e && e.$metadata.httpStatusCode === 416 && e.name === "InvalidRange",
		"unsatisfiable range -> 416 InvalidRange", e && e.name);

	r = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "sdk/big" }));
	ok(r.ContentLength === big.length && r.ETag === `"${md5(big)}"`,
		"HeadObject: ContentLength and ETag");
	e = await err(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "sdk/none" })));
	ok(e && e.$metadata.httpStatusCode === 404, "HeadObject of a missing key -> 404");

	const keys = [];
	let token;
	let pages = 0;
	do {
		r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "sdk/", MaxKeys: 2,
			ContinuationToken: token }));
		for (const c of r.Contents || []) keys.push(`${c.Key}:${c.Size}`);
		token = r.IsTruncated ? r.NextContinuationToken : undefined;
		pages++;
	} while (token && pages < 20);
	const want = ["sdk/big:1048576", "sdk/crc32c:4096", "sdk/plain:4096", "sdk/sha256:4096",
		"sdk/stream:300000"];
	ok(JSON.stringify(keys) === JSON.stringify(want) && pages === 3,
		"ListObjectsV2 with MaxKeys=2 pages through every key in order", `${pages} pages: ${keys}`);

	r = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: "sdk/big" }));
	ok(r.$metadata.httpStatusCode === 204, "DeleteObject -> 204");
	e = await err(s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/big" })));
	ok(e && e.name === "NoSuchKey", "GetObject after DeleteObject -> NoSuchKey", e && e.name);
	r = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: "sdk/big" }));
	ok(r.$metadata.httpStatusCode === 204, "DeleteObject of a missing key -> 204");

	const wrong = client({ credentials: { accessKeyId: ak, secretAccessKey: "not-the-secret" } });
	e = await err(wrong.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/plain" })));
	ok(e && e.name === "SignatureDoesNotMatch", "a wrong secret -> SignatureDoesNotMatch",
		e && e.name);
	e = await err(wrong.send(new PutObjectCommand({ Bucket: bucket, Key: "sdk/evil", Body: small })));
	ok(e && e.$metadata.httpStatusCode === 403, "a PUT with a wrong secret -> 403");
	e = await err(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "sdk/evil" })));
	ok(e && e.$metadata.httpStatusCode === 404, "... and nothing was stored");
}

main().then(() => process.exit(failed ? 1 : 0), (e) => {
	console.log(`not ok - sdk: unexpected exception: ${e && e.name}: ${e && e.message}`);
	process.exit(1);
});
