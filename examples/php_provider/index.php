<?php
/*
 * An SMS provider app in plain PHP (php-cli + php-curl), for messageservice or Bitrix24.
 *
 *   PROVIDER_PUBLIC_URL=http://127.0.0.1:9200 php -S 127.0.0.1:9200 examples/php_provider/index.php
 *
 * Give the portal http://127.0.0.1:9200/ as the app's URL. Then:
 *   - ONAPPINSTALL / ONAPPUPDATE (POST /): register the sender with the event's access token, and keep the
 *     application_token and client_endpoint (in a JSON file: PHP forgets everything between requests);
 *   - HANDLER call (POST /handler): check application_token, answer 200 at once, "send" the SMS, then report
 *     `sent` and `delivered` with messageservice.message.status.update;
 *   - ONAPPUNINSTALL (POST /): forget the installation;
 *   - GET /: the state, for people and tests.
 *
 * REST calls are made as Bitrix's CRest library makes them: POST {client_endpoint}{method}.json, a form body
 * built with http_build_query() carrying `auth`, and a JSON answer with `result` or `error`.
 */

declare(strict_types=1);

const SENDER_TYPE = 'SMS';
const REMEMBERED = 1000; // message_ids kept to drop repeated deliveries (messageservice retries)

function config(string $name, string $default): string
{
    $value = getenv($name);
    return $value === false || $value === '' ? $default : $value;
}

function say(string $text): void
{
    file_put_contents('php://stderr', date('H:i:s') . " [php-provider] $text\n");
}

function answer(int $status, string $text, string $type = 'text/plain'): void
{
    http_response_code($status);
    header("Content-Type: $type; charset=utf-8");
    echo $text;
}

// --- state, in one JSON file guarded by a lock ---------------------------------------------------------------

function state_path(): string
{
    return config('PROVIDER_STATE_FILE', sys_get_temp_dir() . '/php_provider_state.json');
}

/** Run $change on the state under an exclusive lock; what it returns is saved. */
function with_state(callable $change): array
{
    $handle = fopen(state_path(), 'c+');
    flock($handle, LOCK_EX);
    $text = stream_get_contents($handle);
    $state = $text ? json_decode($text, true) : [];
    $state = $change($state + ['application_token' => null, 'client_endpoint' => null, 'seen' => []]);
    ftruncate($handle, 0);
    rewind($handle);
    fwrite($handle, json_encode($state));
    fflush($handle);
    flock($handle, LOCK_UN);
    fclose($handle);
    return $state;
}

function read_state(): array
{
    return with_state(fn (array $state) => $state);
}

// --- the REST client, the CRest way ----------------------------------------------------------------------------

/** Call a REST method; returns the decoded answer: ['result' => ...] or ['error' => ..., 'error_description' => ...]. */
function call_method(string $clientEndpoint, string $accessToken, string $method, array $params = []): array
{
    $params['auth'] = $accessToken;
    $curl = curl_init();
    curl_setopt_array($curl, [
        CURLOPT_URL => rtrim($clientEndpoint, '/') . '/' . $method . '.json',
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => http_build_query($params),
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_FOLLOWLOCATION => false,
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_TIMEOUT => 15,
        CURLOPT_USERAGENT => 'php-provider-example',
    ]);
    $body = curl_exec($curl);
    $failure = curl_error($curl);
    curl_close($curl);
    if ($body === false) {
        return ['error' => 'CONNECTION_ERROR', 'error_description' => $failure];
    }
    $answer = json_decode($body, true);
    if (!is_array($answer)) {
        return ['error' => 'WRONG_ANSWER', 'error_description' => substr($body, 0, 200)];
    }
    return $answer;
}

function failed(array $answer): ?string
{
    return isset($answer['error']) ? $answer['error'] . ': ' . ($answer['error_description'] ?? '') : null;
}

// --- app events: install, update, uninstall -------------------------------------------------------------------

function sender_params(): array
{
    $publicUrl = rtrim(config('PROVIDER_PUBLIC_URL', 'http://127.0.0.1:9200'), '/');
    return [
        'CODE' => config('PROVIDER_CODE', 'php_sms'),
        'TYPE' => SENDER_TYPE,
        'HANDLER' => $publicUrl . '/handler',
        'NAME' => ['en' => 'PHP SMS'],
        'DESCRIPTION' => ['en' => 'An example provider in plain PHP.'],
    ];
}

function on_install(string $event, array $auth): void
{
    $endpoint = $auth['client_endpoint'] ?? '';
    $token = $auth['access_token'] ?? '';
    if ($endpoint === '' || $token === '' || empty($auth['application_token'])) {
        answer(400, 'auth[client_endpoint], auth[access_token] and auth[application_token] are required');
        return;
    }
    // Registering with the event's token also proves the event genuine: only the portal mints tokens it accepts.
    $sender = sender_params();
    $answer = call_method($endpoint, $token, 'messageservice.sender.add', $sender);
    $verb = 'added';
    if (($answer['error'] ?? '') === 'ERROR_SENDER_ALREADY_INSTALLED') {
        $answer = call_method($endpoint, $token, 'messageservice.sender.update', $sender);
        $verb = 'updated';
    }
    if ($error = failed($answer)) {
        say("$event: could not register the sender: $error");
        answer(502, "sender registration failed: $error");
        return;
    }
    with_state(function (array $state) use ($auth, $endpoint) {
        $state['application_token'] = $auth['application_token'];
        $state['client_endpoint'] = $endpoint;
        return $state;
    });
    say("$event: sender '{$sender['CODE']}' $verb, HANDLER {$sender['HANDLER']}");
    answer(200, 'OK');
}

function on_event(): void
{
    $event = strtoupper((string)($_POST['event'] ?? ''));
    $auth = is_array($_POST['auth'] ?? null) ? $_POST['auth'] : [];
    if ($event === 'ONAPPINSTALL' || $event === 'ONAPPUPDATE') {
        on_install($event, $auth);
        return;
    }
    if ($event === 'ONAPPUNINSTALL') {
        $state = read_state();
        if (!token_matches($state, $auth)) {
            answer(403, 'unknown application_token');
            return;
        }
        with_state(fn (array $state) => ['application_token' => null, 'client_endpoint' => null, 'seen' => []]);
        say('ONAPPUNINSTALL: uninstalled; HANDLER calls are refused from now on');
        answer(200, 'OK');
        return;
    }
    answer(400, 'unknown event');
}

function token_matches(array $state, array $auth): bool
{
    $expected = $state['application_token'] ?? null;
    $received = $auth['application_token'] ?? null;
    return is_string($expected) && is_string($received) && hash_equals($expected, $received);
}

// --- HANDLER: one message to send -------------------------------------------------------------------------------

function on_message(): void
{
    $auth = is_array($_POST['auth'] ?? null) ? $_POST['auth'] : [];
    $state = read_state();
    if (!token_matches($state, $auth)) {
        say('refused a HANDLER call with an unknown application_token');
        answer(403, 'unknown application_token');
        return;
    }
    foreach (['message_id', 'code', 'message_to', 'message_body'] as $field) {
        if (!is_string($_POST[$field] ?? null) || $_POST[$field] === '') {
            answer(400, "$field is required");
            return;
        }
    }
    $messageId = $_POST['message_id'];
    $repeated = false;
    with_state(function (array $state) use ($messageId, &$repeated) {
        $repeated = in_array($messageId, $state['seen'], true);
        if (!$repeated) {
            $state['seen'] = array_slice(array_merge($state['seen'], [$messageId]), -REMEMBERED);
        }
        return $state;
    });
    if ($repeated) {
        say("message $messageId again (a retried delivery): already sent");
        answer(200, 'OK');
        return;
    }
    say("message $messageId to {$_POST['message_to']}: '{$_POST['message_body']}'");

    // Answer now: the portal waits for this answer, not for the SMS. Then talk to the carrier and report.
    ignore_user_abort(true);
    header('Content-Length: 2');
    header('Connection: close');
    answer(200, 'OK');
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    flush();

    // A real provider would hand the SMS to its carrier here and report `delivered` when the carrier says so.
    foreach (['sent', 'delivered'] as $status) {
        $result = call_method($state['client_endpoint'], $auth['access_token'] ?? '', 'messageservice.message.status.update', [
            'CODE' => $_POST['code'],
            'MESSAGE_ID' => $messageId, // the 32-hex message_id of this call, not the numeric ID
            'STATUS' => $status,
        ]);
        if ($error = failed($result)) {
            say("message $messageId: the portal refused $status: $error");
            return;
        }
        say("message $messageId: reported $status");
    }
}

// --- routing ----------------------------------------------------------------------------------------------------

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
if ($_SERVER['REQUEST_METHOD'] === 'GET') {
    $state = read_state();
    answer(200, json_encode(['installed' => $state['application_token'] !== null, 'sender' => sender_params()['CODE']]), 'application/json');
} elseif ($path === '/handler') {
    on_message();
} elseif ($path === '/') {
    on_event();
} else {
    answer(404, 'not found');
}
